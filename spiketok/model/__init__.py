"""Rotary time encoding, attention blocks, extendable embeddings, the POYO model and its shareable file."""

from .config import SIZES, ModelConfig, model_config
from .embeddings import UnknownIdError, VocabEmbedding
from .file import ModelFileError, ModelFileMeta, load_model_file, save_model, save_model_file
from .meta import FORMAT_VERSION
from .normalize import TargetNormalizer
from .poyo import POYO
from .rotary import RotaryTimeEmbedding

__all__ = [
    "SIZES",
    "ModelConfig",
    "model_config",
    "UnknownIdError",
    "VocabEmbedding",
    "POYO",
    "RotaryTimeEmbedding",
    "FORMAT_VERSION",
    "ModelFileError",
    "ModelFileMeta",
    "load_model_file",
    "save_model",
    "save_model_file",
    "TargetNormalizer",
]
