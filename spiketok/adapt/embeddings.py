"""Unit embeddings of a model projected to 2-D (PCA, or UMAP when installed), coloured by session."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..model.poyo import POYO


def _umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def project_unit_embeddings(model: POYO, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, list[str], str]:
    """2-D coordinates (n_units, 2) of the unit embeddings, each unit's session id, and the method used."""
    if method not in ("auto", "pca", "umap"):
        raise UserError(f"projection method must be auto, pca or umap, got {method!r}")
    if method == "umap" and not _umap_available():
        raise UserError("UMAP is not installed (pip install umap-learn); use --method pca")
    weights = model.unit_emb.weight.detach().float().cpu().numpy()
    if len(weights) < 3:
        raise UserError(f"the model has {len(weights)} unit embeddings; at least 3 are needed for a 2-D projection")
    sessions = [u.split("/", 1)[0] for u in model.unit_emb.ids]
    if method == "umap" or (method == "auto" and _umap_available()):
        import umap

        coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(weights)
        return np.asarray(coords), sessions, "umap"
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(weights), sessions, "pca"


def plot_unit_embeddings(model: POYO, path: str | Path, method: str = "auto", title: str | None = None) -> Path:
    """Write a PNG scatter of the projected unit embeddings, one colour per session."""
    coords, sessions, used = project_unit_embeddings(model, method)
    return plot_projection(coords, sessions, used, path, title)


def plot_projection(
    coords: np.ndarray, sessions: list[str], method: str, path: str | Path, title: str | None = None
) -> Path:
    """Scatter (n_units, 2) coordinates into a PNG, one colour per session id."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = list(dict.fromkeys(sessions))
    colours = plt.get_cmap("tab10" if len(ids) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.5, 5))
    labels = np.array(sessions)
    for k, sid in enumerate(ids):
        sel = labels == sid
        ax.scatter(
            coords[sel, 0],
            coords[sel, 1],
            s=10,
            alpha=0.75,
            color=colours(k % colours.N),
            label=f"{sid} ({int(sel.sum())})",
        )
    ax.set_xlabel(f"{method.upper()} 1")
    ax.set_ylabel(f"{method.upper()} 2")
    ax.set_title(title or f"unit embeddings ({len(coords)} units, {len(ids)} sessions)")
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
