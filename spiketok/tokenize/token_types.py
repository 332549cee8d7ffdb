"""The kinds of input token: the one definition read by the tokenizer, the model and the streaming decoder."""

from __future__ import annotations

from enum import IntEnum


class TokenType(IntEnum):
    """Row of the model's token-type embedding: a spike, or the START / END marker every unit gets per window."""

    SPIKE = 0
    START = 1
    END = 2


TOKEN_SPIKE, TOKEN_START, TOKEN_END = TokenType.SPIKE, TokenType.START, TokenType.END
