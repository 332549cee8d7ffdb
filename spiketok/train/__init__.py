"""Lightning module, data module, configs, checkpoints and the `train` entry point."""

from ..schema import TrainConfig
from .checkpoint import load, save_model
from .config import load_config
from .run import TrainResult, train

__all__ = ["load", "save_model", "load_config", "TrainConfig", "TrainResult", "train"]
