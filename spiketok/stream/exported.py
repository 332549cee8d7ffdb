"""Decode with an exported model (`spiketok export`): tokenize from its sidecar JSON, run onnxruntime (or TorchScript).

`ExportedModel` reads FILE and FILE.json and decodes one window: the tokenization a caller outside Python
would write from the sidecar (one token per spike, a START token at 0 and an END token at the window length
per unit of the session; times in seconds from the window start). `ExportedStreamingDecoder` keeps the
recent spikes of a stream (keyed once each by the export's streaming graphs, when it has them) and decodes
the window [t - window, t) at each call, with the same interface and ordering rules as
spiketok.stream.StreamingDecoder; `spiketok.stream.replay.replay` streams a recorded session through it
(`spiketok replay --onnx FILE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..model.embeddings import UnknownIdError, require_known
from ..model.sidecar import ExportFileError, Sidecar, read_sidecar
from .packets import PacketRules, StreamOrderError

# ExportFileError and read_sidecar live with the sidecar's types (spiketok.model.sidecar); importable from here too
__all__ = ["ExportedModel", "ExportedStreamingDecoder", "ExportFileError", "read_sidecar"]


class _Graph:
    """One exported graph file, run by onnxruntime (ONNX) or TorchScript: run(*arrays) -> its first output."""

    def __init__(self, path: Path, kind: str, names: list[str], threads: int):
        self.path, self.kind, self.names = path, kind, names
        if kind == "onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                raise ExportFileError(
                    "running an ONNX model needs onnxruntime: pip install 'spiketok[export]'"
                ) from None
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = max(1, int(threads))
            try:
                self._ort = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
                raise ExportFileError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: {e})") from None
        elif kind == "torchscript":
            import warnings

            import torch

            try:
                with warnings.catch_warnings():  # torch.jit's own deprecation note, not about this model
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._ts = torch.jit.load(str(path), map_location="cpu")
            except Exception as e:  # a damaged archive: RuntimeError or a zip error
                raise ExportFileError(f"{path}: TorchScript cannot load it ({type(e).__name__}: {e})") from None
        else:
            raise ExportFileError(f"{path}: unknown graph kind {kind!r} in its sidecar")

    def run(self, *feeds: np.ndarray) -> np.ndarray:
        return self.run_all(*feeds)[0]

    def run_all(self, *feeds: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph, in order."""
        if self.kind == "onnx":
            return self._ort.run(None, dict(zip(self.names, feeds)))
        import torch

        with torch.no_grad():
            out = self._ts(*(torch.from_numpy(a) for a in feeds))
        return [t.numpy() for t in out] if isinstance(out, tuple) else [out.numpy()]


class ExportedModel:
    """An exported window graph and its sidecar: `run` on tokens, `tokenize` + `predict` on spikes; `keys` and
    `run_keyed` for the streaming graphs (when the export has them: `has_stream`)."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.path = Path(path)
        self.meta: Sidecar = read_sidecar(path)
        self.window, self.target, self.dims = self.meta.window, self.meta.target, self.meta.dims
        self.units: dict[str, int] = self.meta.units
        self.sessions: dict[str, int] = self.meta.sessions
        self.types: dict[str, int] = self.meta.token_types
        self.names = [i.name for i in self.meta.inputs]
        self.absolute = self.meta.latents.grid == "absolute"  # the graph takes window_start
        self.graph = self.meta.graph
        self.recurrent = self.meta.backbone == "recurrent"  # FILE: a step graph (model.export_recurrent)
        self._window = _Graph(self.path, self.graph, self.names, threads)
        self._keys = self._stream = None
        stream = self.meta.stream
        if stream is not None:  # exports from before the streaming graphs have none: decode whole windows then
            graphs = (stream.keys, stream.window)
            for g in graphs:
                if not (self.path.parent / g.file).is_file():
                    raise ExportFileError(
                        f"{self.path}: its streaming graph {g.file} is missing "
                        "(`spiketok export` writes it beside the model; keep them together)"
                    )
            self._keys, self._stream = (
                _Graph(self.path.parent / g.file, self.graph, [i.name for i in g.inputs], threads) for g in graphs
            )

    @property
    def has_stream(self) -> bool:
        """Whether the export holds the streaming graphs (keys once per spike, then one graph per decode)."""
        return self._stream is not None

    def run(
        self,
        input_units: np.ndarray,
        input_times: np.ndarray,
        input_types: np.ndarray,
        output_times: np.ndarray,
        session: int,
        window_start: float | None = None,
    ) -> np.ndarray:
        """The graph on one window's tokens: behaviour (n_out, D) float32 in the recording's units.
        window_start (session time, s) is needed by graphs whose latents sit on the absolute grid, and only by them."""
        feeds = [
            np.ascontiguousarray(input_units, np.int64),
            np.ascontiguousarray(input_times, np.float64),
            np.ascontiguousarray(input_types, np.int64),
            np.ascontiguousarray(output_times, np.float64),
            np.array([session], np.int64),
        ]
        if self.absolute:
            if window_start is None:
                raise ValueError(
                    f"{self.path.name}: this graph's latents sit on the absolute time grid; pass the "
                    "window's start in session time (window_start=)"
                )
            feeds.append(np.array([window_start], np.float64))
        return self._window.run(*feeds)

    def step(
        self, units: np.ndarray, times: np.ndarray, state: np.ndarray, session: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """A recurrent model's step graph on one chunk: spikes' unit rows (n,) and times (n,) s from the chunk's
        start, the state before it (1, dim) -> behaviour (1, D) in the recording's units and the state after it."""
        if not self.recurrent:
            raise ExportFileError(f"{self.path}: not the step graph of a recurrent model")
        pred, state = self._window.run_all(
            np.ascontiguousarray(units, np.int64),
            np.ascontiguousarray(times, np.float64),
            np.ascontiguousarray(state, np.float32),
            np.array([session], np.int64),
        )
        return pred, state

    def keys(self, units: np.ndarray, types: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Streaming graph 1: keys (n, keys_width) float32 of tokens at session-clock times (s)."""
        if self._keys is None:
            raise ExportFileError(f"{self.path}: this export has no streaming graphs; export the model again")
        return self._keys.run(
            np.ascontiguousarray(units, np.int64),
            np.ascontiguousarray(types, np.int64),
            np.ascontiguousarray(times, np.float64),
        )

    def run_keyed(self, keys: np.ndarray, output_times: np.ndarray, session: int, window_start: float) -> np.ndarray:
        """Streaming graph 2: behaviour (n_out, D) from the keys of every token of the window starting at
        window_start (session time, s): its spikes and its units' START/END tokens."""
        if self._stream is None:
            raise ExportFileError(f"{self.path}: this export has no streaming graphs; export the model again")
        return self._stream.run(
            np.ascontiguousarray(keys, np.float32),
            np.ascontiguousarray(output_times, np.float64),
            np.array([session], np.int64),
            np.array([window_start], np.float64),
        )

    def unit_rows(self, unit_ids: Sequence[str]) -> np.ndarray:
        """Vocabulary rows (n,) of full unit ids ("<session>/<unit>"); unknown ids raise UnknownIdError."""
        require_known(
            unit_ids,
            self.units,
            "unit id(s) unknown to this exported model",
            "adapt the model to that session and export it again",
        )
        return np.array([self.units[u] for u in unit_ids], dtype=np.int64)

    def bind_units(self, decoder: PacketRules, unit_ids: Sequence[str] | None) -> np.ndarray:
        """Set a streaming decoder's unit_ids (default: this model's units of its session), n_units and id table;
        returns the units' vocabulary rows (n_units,)."""
        if unit_ids is None:
            unit_ids = [u for u in self.units if u.startswith(f"{decoder.session_id}/")]
            if not unit_ids:
                raise ValueError(
                    f"the exported model knows session {decoder.session_id!r} but none of its units; pass unit_ids"
                )
        decoder.unit_ids = list(unit_ids)
        decoder.n_units = len(decoder.unit_ids)
        decoder._build_id_table()
        return self.unit_rows(decoder.unit_ids)

    def session_row(self, session_id: str) -> int:
        if session_id not in self.sessions:
            raise UnknownIdError(
                f"session {session_id!r} is unknown to this exported model "
                f"(it knows {len(self.sessions)}); adapt the model to it and export it again"
            )
        if session_id not in self.meta.normalization:
            raise ExportFileError(
                f"no normalisation statistics for session {session_id!r}, task {self.target!r} "
                "in this export: its outputs would not be in the recording's units"
            )
        return self.sessions[session_id]

    def tokenize(
        self, spike_rows: np.ndarray, spike_times: np.ndarray, unit_rows: np.ndarray, length: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokens of one window: spikes (rows, times from the window start), then START (t=0) and END (t=length)
        tokens for each of the session's units `unit_rows`; returns (input_units, input_times, input_types)."""
        length = self.window if length is None else length
        n_s, n_u = len(spike_rows), len(unit_rows)
        units = np.concatenate([spike_rows, unit_rows, unit_rows]).astype(np.int64)
        times = np.concatenate([spike_times, np.zeros(n_u), np.full(n_u, length)]).astype(np.float64)
        types = np.concatenate(
            [np.full(n_s, self.types["spike"]), np.full(n_u, self.types["start"]), np.full(n_u, self.types["end"])]
        ).astype(np.int64)
        return units, times, types


class ExportedStreamingDecoder(PacketRules):
    """StreamingDecoder's interface on an exported model: push packets of spikes, decode the behaviour at t.

    decoder = ExportedStreamingDecoder(ExportedModel("model.onnx"), "session_id")
    decoder.push(unit_ids, times); y = decoder.decode(t)   # (D,) from spikes in [t - window, t)

    keyed (default: when the export has its streaming graphs): each pushed spike is keyed once by the keys graph
    and kept; a decode keys the units' START/END tokens and runs the stream graph on the window's keys, so the
    per-token work follows the new spikes. Otherwise each decode tokenizes the window and runs the window graph.
    """

    def __init__(
        self,
        exported: ExportedModel,
        session_id: str,
        unit_ids: Sequence[str] | None = None,
        target: str | None = None,
        late: str = "raise",
        keyed: bool | None = None,
        capacity: int = 16384,
    ):
        self._open(session_id, late)
        if target is not None and target != exported.target:
            raise ValueError(f"target {target!r}: this model was exported for {exported.target!r}")
        if exported.recurrent:
            raise ValueError(f"{exported.path.name}: a recurrent model's step graph: use ExportedRecurrentDecoder")
        if keyed and not exported.has_stream:
            raise ValueError(
                f"keyed=True: {exported.path.name} has no streaming graphs (exported by an older "
                "spiketok); export the model again"
            )
        self.exported, self.window, self.target = exported, exported.window, exported.target
        self.keyed = exported.has_stream if keyed is None else bool(keyed)
        self._session = exported.session_row(session_id)
        self._rows = exported.bind_units(self, unit_ids)
        self._out = np.array([self.window], np.float64)
        n = self.n_units
        self._p = 2 * n  # keyed: START/END keys go in the 2 * n_units buffer rows just before the window's spikes
        self._edge_units = np.concatenate([self._rows, self._rows])
        self._edge_types = np.repeat(np.array([exported.types["start"], exported.types["end"]], np.int64), n)
        self._edge_times = np.zeros(2 * n, np.float64)
        self._spike_type = np.int64(exported.types["spike"])
        self._capacity = max(int(capacity), 16)
        self.reset()

    def reset(self) -> None:
        """Forget all spikes and decode times."""
        self._times, self._units = np.zeros(0, np.float64), np.zeros(0, np.int64)
        if self.keyed:
            self._alloc(self._capacity)
        self._last_time = self._last_decode = -np.inf
        self.n_late = 0

    @property
    def n_buffered(self) -> int:
        """Spikes held (those a later decode may still need)."""
        return self._hi - self._lo if self.keyed else len(self._times)

    def _alloc(self, capacity: int) -> None:
        """Keyed buffers: spike times (capacity,) and keys (2 * n_units + capacity, keys_width); live spikes are
        slots [lo, hi), their keys rows p + lo .. p + hi."""
        width = int(self.exported.meta.stream.keys.outputs[0].shape[1])
        self._times = np.zeros(capacity, np.float64)
        self._keys = np.zeros((self._p + capacity, width), np.float32)
        self._lo = self._hi = 0

    def _make_room(self, n: int) -> None:
        """n free slots at the end: the live spikes moved to the front, the buffers grown when they are full."""
        cap = len(self._times)
        if self._hi + n <= cap:
            return
        live, lo, hi, p = self._hi - self._lo, self._lo, self._hi, self._p
        times, keys = self._times[lo:hi].copy(), self._keys[p + lo : p + hi].copy()
        if live + n > cap // 4:  # keep compactions rare: at most one per ~3/4 buffer of new spikes
            self._alloc(max(2 * cap, 4 * (live + n)))
        self._times[:live], self._keys[p : p + live] = times, keys
        self._lo, self._hi = 0, live

    def push(self, unit_ids: Sequence | np.ndarray, times: Sequence[float] | np.ndarray) -> int:
        """Add a packet of spikes (local indices or string ids, times in s); the ordering rules of StreamingDecoder."""
        packet = self._checked_packet(unit_ids, times)
        if packet is None:
            return 0
        units, times = packet
        n = len(times)
        if self.keyed:
            self._make_room(n)
            lo, hi, p = self._hi, self._hi + n, self._p
            self._keys[p + lo : p + hi] = self.exported.keys(self._rows[units], np.full(n, self._spike_type), times)
            self._times[lo:hi] = times
            self._hi = hi
        else:
            self._times, self._units = np.concatenate([self._times, times]), np.concatenate([self._units, units])
        self._last_time = float(times[-1])
        return n

    def decode(self, t: float) -> np.ndarray:
        """Behaviour (D,) at time t in the recording's units, from the spikes pushed with times in [t - window, t)."""
        t = float(t)
        if t < self._last_decode:
            raise StreamOrderError(f"decode: t={t:.6f} s is before the previous decode time {self._last_decode:.6f} s")
        t0 = t - self.window
        if self.keyed:
            live = self._times[self._lo : self._hi]
            a, b = self._lo + np.searchsorted(live, [t0, t], side="left")
            # START/END keys go in the rows just before spike a's: spikes there are older than t0 and, since decode
            # times never decrease, never needed again
            n, p = self.n_units, self._p
            self._edge_times[:n], self._edge_times[n:] = t0, t
            self._keys[a : a + p] = self.exported.keys(self._edge_units, self._edge_types, self._edge_times)
            y = self.exported.run_keyed(self._keys[a : p + b], self._out, self._session, t0)[0]
            self._lo = int(a)
        else:
            a, b = np.searchsorted(self._times, [t0, t], side="left")
            self._times, self._units = self._times[a:], self._units[a:]  # older spikes are never needed again
            b -= a
            tokens = self.exported.tokenize(self._rows[self._units[:b]], self._times[:b] - t0, self._rows)
            y = self.exported.run(*tokens, self._out, self._session, t0)[0]
        self._last_decode = t
        return y
