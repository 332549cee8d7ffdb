"""Model sizes: named presets and the dataclass every size is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..tokenize.tokenizer import LATENT_GRIDS, is_multiple

BACKBONES = ("perceiver", "recurrent")


@dataclass
class ModelConfig:
    """Hyper-parameters of a POYO model; `window` and the latent grid are shared with the tokenizer."""

    dim: int = 64
    depth: int = 2
    num_latents_per_step: int = 8
    latent_step: float = 0.125
    cross_heads: int = 2
    self_heads: int = 4
    head_dim: int = 32
    ffn_mult: int = 4
    dropout: float = 0.1
    t_min: float = 1e-4
    t_max: float = 4.0
    window: float = 1.0
    # where latents sit: "window" = (k + 0.5) * step from each window's start (moves with the window);
    # "absolute" = on the session clock's grid (k + 0.5) * step, so a latent's score with a spike never
    # changes while both are in the window (what the incremental StreamingDecoder needs)
    latent_grid: str = "window"
    # "perceiver": POYO (latents of the whole window, self-attention, output queries over them);
    # "recurrent": POSSM-like (spiketok.model.recurrent): each latent step is a chunk whose latents read its
    # spikes, then a recurrent state is updated once per chunk and read out (depth = self-attention blocks per chunk)
    backbone: str = "perceiver"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone={self.backbone!r}: use one of {list(BACKBONES)}")
        if self.latent_grid not in LATENT_GRIDS:
            raise ValueError(f"latent_grid={self.latent_grid!r}: use one of {list(LATENT_GRIDS)}")
        if self.latent_grid == "absolute" and not is_multiple(self.window, self.latent_step):
            raise ValueError(
                f"latent_grid='absolute' needs a window ({self.window} s) that is a whole number of "
                f"latent steps ({self.latent_step} s)"
            )

    def to_dict(self) -> dict:
        """The settings; `backbone` only when not the default, so a perceiver's model file reads as before."""
        d = asdict(self)
        if d["backbone"] == "perceiver":
            del d["backbone"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _recurrent(dim: int, depth: int, latents: int, cross_heads: int, self_heads: int) -> ModelConfig:
    """A recurrent size: chunks of 50 ms with `latents` latents each, `depth` self-attention blocks per chunk."""
    return ModelConfig(
        dim=dim,
        depth=depth,
        num_latents_per_step=latents,
        latent_step=0.05,
        cross_heads=cross_heads,
        self_heads=self_heads,
        head_dim=32,
        backbone="recurrent",
    )


SIZES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        dim=64, depth=2, num_latents_per_step=8, latent_step=0.125, cross_heads=2, self_heads=4, head_dim=32
    ),
    "poyo-1.3M": ModelConfig(
        dim=64, depth=6, num_latents_per_step=16, latent_step=0.125, cross_heads=2, self_heads=8, head_dim=64
    ),
    "poyo-11.8M": ModelConfig(
        dim=128, depth=24, num_latents_per_step=32, latent_step=0.125, cross_heads=4, self_heads=8, head_dim=64
    ),
    # recurrent (POSSM-like): 50 ms chunks, a state of `dim` (a diagonal SSM); see spiketok.model.recurrent
    "possm-tiny": _recurrent(dim=64, depth=1, latents=4, cross_heads=2, self_heads=2),
    "possm-1.3M": _recurrent(dim=128, depth=2, latents=8, cross_heads=4, self_heads=8),
}


def model_config(name_or_dict: str | dict | ModelConfig) -> ModelConfig:
    """A named size, a dict of settings (optionally with `size` as the base), or a config as is."""
    if isinstance(name_or_dict, ModelConfig):
        return name_or_dict
    if isinstance(name_or_dict, str):
        if name_or_dict not in SIZES:
            raise ValueError(f"unknown model size {name_or_dict!r}; choose one of {list(SIZES)}")
        return ModelConfig(**SIZES[name_or_dict].to_dict())
    d = dict(name_or_dict)
    base = model_config(d.pop("size", "tiny")).to_dict()
    base.update(d)
    return ModelConfig.from_dict(base)
