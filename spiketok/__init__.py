"""spiketok: POYO-style spike-token transformers for neural population decoding."""

__version__ = "0.1.0"
