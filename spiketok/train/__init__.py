"""Lightning module, data module, configs, checkpoints and the `train` entry point."""

from .checkpoint import load, save_model
from .config import load_config
from .run import TrainResult, train

__all__ = ["load", "save_model", "load_config", "TrainResult", "train"]
