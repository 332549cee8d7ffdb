"""spiketok: POYO-style spike-token transformers for neural population decoding."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("SPIKETOK_MODULE_LOG"):  # a benchmark records which code it ran (spiketok/module_log.py)
    from .module_log import record_at_exit

    record_at_exit()


def load(path):
    """A trained model (eval mode) from a spiketok model file (safetensors + JSON metadata; never unpickles).

    A pickled checkpoint raises spiketok.model.ModelFileError saying to run `spiketok convert OLD NEW`.
    """
    from .model.file import load_model_file

    return load_model_file(path)


def __getattr__(name: str):
    """`spiketok.adapt`, imported on first use: call it as spiketok.adapt(model, session, mode=..., ...)."""
    if name == "adapt":
        import importlib

        return importlib.import_module(".adapt", __name__)  # a callable package: spiketok/adapt/__init__.py
    raise AttributeError(f"module 'spiketok' has no attribute {name!r}")
