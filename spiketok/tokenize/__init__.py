"""Spikes -> tokens, latents and output queries; batching by padding with masks."""

from .batch import Batch, WindowTokens, collate
from .tokenizer import TOKEN_END, TOKEN_SPIKE, TOKEN_START, SpikeTokenizer

__all__ = ["Batch", "WindowTokens", "collate", "SpikeTokenizer", "TOKEN_SPIKE", "TOKEN_START", "TOKEN_END"]
