"""The export sidecar (`FILE.json` beside an exported graph) as typed records, written and read in one place.

`Sidecar` holds every field a sidecar has; `TensorSpec`, `LatentLayout`, `GraphEntry`, `StreamEntry` and
`RecurrentEntry` its parts. `to_dict()` gives the JSON object `spiketok export` writes (`write_sidecar`), key for
key in the order of docs/export.md; `from_dict()` reads one back, refusing a missing or wrong-typed key with an
ExportFileError that names it (`sidecar m.onnx.json: 'latents.step' is missing`). Fields that older format
versions lack read as what their absence meant. The builders from a model are in spiketok.model.export_sidecar.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.atomic import atomic_write
from ..errors import SpiketokError
from .json_fields import MISSING, JsonFields, is_int, is_num, is_positive, list_of

SIDECAR_FORMAT = "spiketok-export"
SIDECAR_VERSION = 3  # bump when the sidecar changes in a way older readers cannot follow (2: absolute latent grid;
# 3: recurrent models' step graph, `backbone` and `recurrent`)

__all__ = [
    "SIDECAR_FORMAT",
    "SIDECAR_VERSION",
    "ExportFileError",
    "GraphEntry",
    "LatentLayout",
    "RecurrentEntry",
    "Sidecar",
    "StreamEntry",
    "TensorSpec",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]


class ExportFileError(SpiketokError, ValueError):
    """An exported model that cannot be used (sidecar missing, damaged or too new; runtime missing)."""


# --- the records --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph: its name, dtype, shape (sizes, or names of dynamic axes) and what it is."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    doc: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "doc": self.doc}

    @classmethod
    def from_dict(cls, d: Any, path: str = "", source: str = "sidecar") -> TensorSpec:
        f = JsonFields(d, path, source, ExportFileError)
        shape = f.get("shape", list_of(lambda v: is_int(v) or isinstance(v, str)), "a list of sizes and axis names")
        return cls(f.text("name"), f.text("dtype"), tuple(shape), f.text("doc"))


def _specs(f: JsonFields, name: str) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_dict(item.d, item.path, f.source) for item in f.items(name))


@dataclass(frozen=True)
class LatentLayout:
    """The latent tokens inside the graph: their grid (`window` or `absolute`), step (s), number per step and ids;
    on the window grid their `times` (s from the window start), on the absolute grid the `rule` that places them."""

    grid: str
    step: float
    per_step: int
    ids: tuple[int, ...]
    times: tuple[float, ...] | None = None
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"grid": self.grid, "step": self.step, "per_step": self.per_step, "ids": list(self.ids)}
        if self.rule is not None:
            d["rule"] = self.rule
        if self.times is not None:
            d["times"] = list(self.times)
        return d

    @classmethod
    def from_dict(
        cls, d: Any, path: str = "latents", source: str = "sidecar", version: int = SIDECAR_VERSION
    ) -> LatentLayout:
        f = JsonFields(d, path, source, ExportFileError)
        grid = f.text("grid", "window" if version < 2 else MISSING)  # version 1: the window grid only
        absolute = grid == "absolute"
        return cls(
            grid=grid,
            step=float(f.get("step", is_positive, "a positive number")),
            per_step=f.get("per_step", lambda v: is_int(v) and v > 0, "a whole number > 0"),
            ids=tuple(f.get("ids", list_of(is_int), "a list of whole numbers")),
            times=None if absolute else tuple(float(t) for t in f.get("times", list_of(is_num), "a list of numbers")),
            rule=f.text("rule") if absolute else None,
        )


@dataclass(frozen=True)
class GraphEntry:
    """One more graph file of the export (relative to the sidecar's folder), with its inputs and outputs."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: Any, path: str = "", source: str = "sidecar") -> GraphEntry:
        f = JsonFields(d, path, source, ExportFileError)
        return cls(f.text("file"), _specs(f, "inputs"), _specs(f, "outputs"))


@dataclass(frozen=True)
class StreamEntry:
    """The streaming graphs of a POYO export: `keys` (each token's keys once) and `window` (a decode from them)."""

    doc: str
    keys: GraphEntry
    window: GraphEntry

    def to_dict(self) -> dict[str, Any]:
        return {"doc": self.doc, "keys": self.keys.to_dict(), "window": self.window.to_dict()}

    @classmethod
    def from_dict(cls, d: Any, path: str = "stream", source: str = "sidecar") -> StreamEntry:
        f = JsonFields(d, path, source, ExportFileError)
        keys, window = (GraphEntry.from_dict(f.obj(k).d, f.key(k), source) for k in ("keys", "window"))
        return cls(f.text("doc"), keys, window)


@dataclass(frozen=True)
class RecurrentEntry:
    """A recurrent model's step graph: the chunk length (s), the state's size, the state at the stream's start and
    each session's prediction from it (before the first chunk ends)."""

    doc: str
    chunk: float
    dim: int
    initial_state: tuple[float, ...]
    initial_behavior: dict[str, tuple[float, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc": self.doc,
            "chunk": self.chunk,
            "dim": self.dim,
            "initial_state": list(self.initial_state),
            "initial_behavior": {s: list(v) for s, v in self.initial_behavior.items()},
        }

    @classmethod
    def from_dict(cls, d: Any, path: str = "recurrent", source: str = "sidecar") -> RecurrentEntry:
        f = JsonFields(d, path, source, ExportFileError)
        numbers = list_of(is_num)
        behavior = f.mapping("initial_behavior", numbers, "a list of numbers")
        return cls(
            doc=f.text("doc"),
            chunk=float(f.get("chunk", is_positive, "a positive number")),
            dim=f.get("dim", lambda v: is_int(v) and v > 0, "a whole number > 0"),
            initial_state=tuple(f.get("initial_state", numbers, "a list of numbers")),
            initial_behavior={s: tuple(v) for s, v in behavior.items()},
        )


def _token_types(f: JsonFields) -> dict[str, int]:
    """The token type codes: spike, start and end at least."""
    for k in ("spike", "start", "end"):
        f.obj("token_types").get(k, is_int, "a whole number")
    return f.mapping("token_types", is_int, "a whole number")


def _normalization(f: JsonFields) -> dict[str, dict[str, list[float]]]:
    """Each session's mean and std of the target."""
    norm = f.obj("normalization")
    for sid in norm.d:
        for k in ("mean", "std"):
            norm.obj(sid).get(k, list_of(is_num), "a list of numbers")
    return copy.deepcopy(norm.d)


@dataclass(frozen=True, kw_only=True)
class Sidecar:
    """Everything a caller needs to turn spikes into an exported graph's inputs (docs/export.md); `stream`: the
    streaming graphs (POYO exports since they exist), `backbone` and `recurrent`: a recurrent model's step graph."""

    format: str = SIDECAR_FORMAT
    format_version: int = SIDECAR_VERSION
    spiketok_version: str
    graph: str  # onnx or torchscript
    precision: str  # float32 or int8
    target: str
    dims: int
    window: float
    causal: bool
    token_types: dict[str, int]
    latents: LatentLayout
    units: dict[str, int]
    sessions: dict[str, int]
    normalization: dict[str, dict[str, list[float]]]
    targets: dict[str, str]
    splits: dict[str, dict[str, Any]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    stream: StreamEntry | None = None
    backbone: str | None = None
    recurrent: RecurrentEntry | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the sidecar file; `stream`, `backbone` and `recurrent` only when set."""
        d = {
            "format": self.format,
            "format_version": self.format_version,
            "spiketok_version": self.spiketok_version,
            "graph": self.graph,
            "precision": self.precision,
            "target": self.target,
            "dims": self.dims,
            "window": self.window,
            "causal": self.causal,
            "token_types": dict(self.token_types),
            "latents": self.latents.to_dict(),
            **copy.deepcopy(
                {
                    "units": self.units,
                    "sessions": self.sessions,
                    "normalization": self.normalization,
                    "targets": self.targets,
                    "splits": self.splits,
                }
            ),
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
        }
        if self.stream is not None:
            d["stream"] = self.stream.to_dict()
        if self.backbone is not None:
            d["backbone"] = self.backbone
        if self.recurrent is not None:
            d["recurrent"] = self.recurrent.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "sidecar") -> Sidecar:
        """Read a sidecar's JSON object; ExportFileError (naming the key) if it is foreign, too new or damaged."""
        if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
            raise ExportFileError(f"{source}: not a spiketok export sidecar (no format {SIDECAR_FORMAT!r})")
        version = d.get("format_version")
        if not is_int(version) or version > SIDECAR_VERSION:
            raise ExportFileError(
                f"{source}: format version {version!r}; this spiketok reads up to {SIDECAR_VERSION}: upgrade spiketok"
            )
        f = JsonFields(d, "", source, ExportFileError)
        backbone = f.text("backbone", None)
        return cls(
            format=SIDECAR_FORMAT,
            format_version=version,
            spiketok_version=f.text("spiketok_version"),
            graph=f.text("graph"),
            precision=f.text("precision", "float32" if version < 2 else MISSING),  # before int8 export: float32
            target=f.text("target"),
            dims=f.get("dims", lambda v: is_int(v) and v > 0, "a whole number > 0"),
            window=float(f.get("window", is_positive, "a positive number")),
            causal=f.get("causal", lambda v: isinstance(v, bool), "true or false"),
            token_types=_token_types(f),
            latents=LatentLayout.from_dict(f.obj("latents").d, "latents", source, version),
            units=f.mapping("units", is_int, "a whole number"),
            sessions=f.mapping("sessions", is_int, "a whole number"),
            normalization=_normalization(f),
            targets=f.mapping("targets", lambda v: isinstance(v, str), "a string"),
            splits=f.mapping("splits", lambda v: isinstance(v, dict), "a mapping"),
            inputs=_specs(f, "inputs"),
            outputs=_specs(f, "outputs"),
            stream=StreamEntry.from_dict(f.obj("stream").d, "stream", source) if f.has("stream") else None,
            backbone=backbone,
            recurrent=RecurrentEntry.from_dict(f.obj("recurrent").d, "recurrent", source)
            if f.has("recurrent") or backbone == "recurrent"
            else None,
        )


# --- the file -----------------------------------------------------------------------------------------------------


def sidecar_path(path: str | Path) -> Path:
    """Where the sidecar of an exported graph lives: FILE.json beside FILE."""
    return Path(str(path) + ".json")


def write_sidecar(meta: Sidecar, graph: str | Path) -> Path:
    """Write the sidecar of the exported graph `graph` (atomically) at FILE.json; returns its path."""
    side = sidecar_path(graph)
    with atomic_write(side) as tmp:
        Path(tmp).write_text(json.dumps(meta.to_dict(), indent=1))
    return side


def read_sidecar(path: str | Path) -> Sidecar:
    """The sidecar (FILE.json) of an exported graph FILE, checked for format, version and every field's type."""
    side = sidecar_path(path)
    if not Path(path).is_file():
        raise ExportFileError(f"{path}: no such exported model file")
    if not side.is_file():
        raise ExportFileError(
            f"{path}: its sidecar {side.name} is missing (`spiketok export` writes both; keep them together)"
        )
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportFileError(f"{side}: not valid JSON ({e}); export the model again") from None
    return Sidecar.from_dict(meta, source=f"sidecar {side}")
