"""Rotary time encoding, attention blocks, extendable embeddings and the POYO model."""

from .config import SIZES, ModelConfig, model_config
from .embeddings import UnknownIdError, VocabEmbedding
from .poyo import POYO
from .rotary import RotaryTimeEmbedding

__all__ = ["SIZES", "ModelConfig", "model_config", "UnknownIdError", "VocabEmbedding", "POYO", "RotaryTimeEmbedding"]
