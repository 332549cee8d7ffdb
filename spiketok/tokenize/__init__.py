"""Spikes -> tokens, latents and output queries; batching by padding with masks."""

from .batch import Batch, WindowTokens, collate
from .token_types import TOKEN_END, TOKEN_SPIKE, TOKEN_START, TokenType
from .tokenizer import SpikeTokenizer

__all__ = ["Batch", "WindowTokens", "collate", "SpikeTokenizer", "TOKEN_SPIKE", "TOKEN_START", "TOKEN_END", "TokenType"]
