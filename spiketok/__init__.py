"""spiketok: POYO-style spike-token transformers for neural population decoding."""

__version__ = "0.1.0"


def load(path):
    """A trained model (eval mode) from a spiketok checkpoint file."""
    from .train.checkpoint import load as _load

    return _load(path)
