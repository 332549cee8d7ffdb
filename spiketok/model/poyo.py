"""POYO: spike tokens -> latents (cross-attention) -> self-attention -> output queries -> readouts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.targets import resolve_target
from ..tokenize import SpikeTokenizer, TokenType
from ..tokenize.batch import Batch
from .attention import CrossAttentionBlock, SelfAttentionBlock
from .config import ModelConfig
from .embeddings import VocabEmbedding
from .inference_cache import WeightCache, caching_allowed
from .meta import ModelMeta
from .normalize import TargetNormalizer
from .rotary import RotaryTimeEmbedding
from .stages import LatentQueries, OutputQueries, PoyoStages, TokenKV

N_TOKEN_TYPES = len(TokenType)  # spike, unit start, unit end
MAX_CACHED_KV_FLOATS = 8_000_000  # the vocabulary's key/value table is kept in inference up to 32 MB


class POYO(PoyoStages, nn.Module):
    """The POYO PerceiverIO over spike tokens with rotary time.

    `forward` takes a `spiketok.tokenize.Batch` (see its docstring for every field's shape): tokens ->
    latents (cross-attention) -> processed latents (self-attention) -> output queries -> readout.
    The model owns its tokenizer (`tokenizer()`), its target statistics (`normalizer`, see
    spiketok.model.normalize) and what it was trained and adapted with (`meta`, typed).
    """

    def __init__(
        self,
        config: ModelConfig,
        unit_ids: Sequence[str] = (),
        session_ids: Sequence[str] = (),
        tasks: dict[str, int] | None = None,
    ):
        super().__init__()
        c = self.config = config
        self.unit_emb = VocabEmbedding(c.dim, unit_ids, kind="unit")
        self.session_emb = VocabEmbedding(c.dim, session_ids, kind="session")
        self.token_type_emb = nn.Embedding(N_TOKEN_TYPES, c.dim)
        self.latent_emb = nn.Embedding(c.num_latents_per_step, c.dim)
        self.rotary = RotaryTimeEmbedding(c.head_dim, c.t_min, c.t_max)
        self.encoder = CrossAttentionBlock(c.dim, c.cross_heads, c.head_dim, True, c.ffn_mult, c.dropout)
        self.processor = nn.ModuleList(
            SelfAttentionBlock(c.dim, c.self_heads, c.head_dim, c.ffn_mult, c.dropout) for _ in range(c.depth)
        )
        self.decoder = CrossAttentionBlock(c.dim, c.cross_heads, c.head_dim, False, c.ffn_mult, c.dropout)
        self.norm_out = nn.LayerNorm(c.dim)
        self.readouts = nn.ModuleDict()
        self.normalizer = TargetNormalizer()
        for name, dim in (tasks or {}).items():
            self.add_task(name, dim)
        nn.init.normal_(self.token_type_emb.weight, std=0.02)
        nn.init.normal_(self.latent_emb.weight, std=0.02)
        self.meta = ModelMeta()  # what it was trained and adapted with (saved in the model file)
        self._cache = WeightCache()  # inference only: what a forward computes from the weights alone

    def _apply(self, fn, recurse=True):
        self._cache.clear()  # .to(), .double(), ... swap weights' data in place, which their versions do not see
        return super()._apply(fn, recurse)

    def tokenizer(self, window: float | None = None) -> SpikeTokenizer:
        """The tokenizer of this model's latent grid; `window` (s) defaults to the model's context window."""
        c = self.config
        return SpikeTokenizer(
            c.num_latents_per_step, c.latent_step, c.window if window is None else window, c.latent_grid
        )

    def target_for(self, session_id: str, available: Sequence[str] | None, requested: str | None = None) -> str:
        """The behaviour this model decodes for a session: as trained, else `requested`, else its only task
        the session has (`available`: the session's behaviours, None when unknown). See resolve_target."""
        return resolve_target(session_id, available, requested, self.meta.targets, self.task_names)

    def readout_target(self, requested: str | None = None, session_id: str | None = None) -> str:
        """The task whose readout a decoder of this model uses (the streaming decoders, the export graphs):
        `requested`, which must be one of its tasks; else what it decodes for `session_id` (`target_for`); else,
        for any session, its only task or the one every session was trained on. ValueError when none is clear."""
        names = self.task_names
        if requested is not None:
            if requested not in names:
                raise ValueError(f"target {requested!r} is not a task of this model (it has {names})")
            return requested
        if session_id is not None:
            return self.target_for(session_id, None)
        trained = set(self.meta.targets.values())
        if len(names) == 1 or len(trained) == 1:
            return names[0] if len(names) == 1 else trained.pop()
        raise ValueError(f"this model has several tasks {names}: choose one with --target")

    @property
    def task_names(self) -> list[str]:
        return list(self.readouts.keys())

    def add_task(self, name: str, dim: int) -> None:
        """A linear readout (dim -> output size) for a behaviour task."""
        if name in self.readouts:
            if self.readouts[name].out_features != dim:
                raise ValueError(f"task {name!r} has {self.readouts[name].out_features} outputs, not {dim}")
            return
        self.readouts[name] = nn.Linear(self.config.dim, dim)

    def _distinct_pairs(self, units: torch.Tensor, types: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct (unit, type) keys (K,) present in (B, n) tokens, and each token's row among them (B, n).

        A presence table over the vocabulary instead of torch.unique: no sort, 3x faster on a window.
        """
        key = units * N_TOKEN_TYPES + types
        present = torch.zeros(len(self.unit_emb) * N_TOKEN_TYPES, dtype=torch.bool, device=key.device)
        present[key] = True
        row = torch.cumsum(present, 0) - 1
        return present.nonzero().squeeze(1), row.index_select(0, key.reshape(-1)).view_as(key)

    def _pair_kv(self, pairs: torch.Tensor) -> torch.Tensor:
        """Encoder keys and values (K, 2 * inner) of (unit, type) keys (K,): a token's depend on nothing else."""
        return self.pair_kv(self.unit_emb(pairs // N_TOKEN_TYPES), pairs % N_TOKEN_TYPES)

    def token_kv_table_floats(self) -> int:
        """Size (number of floats) of `token_kv_table`: it grows with the vocabulary."""
        return len(self.unit_emb) * N_TOKEN_TYPES * 2 * self.config.cross_heads * self.config.head_dim

    def token_kv_table(self) -> torch.Tensor:
        """The encoder's keys and values (n_units * 3, 2 * inner) of every (unit, type) pair; row unit * 3 + type."""
        return self._pair_kv(torch.arange(len(self.unit_emb) * N_TOKEN_TYPES, device=self.unit_emb.weight.device))

    def token_kv(self, units: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """The encoder's keys and values (B, n_tokens, 2 * inner), not yet rotated, of tokens (B, n_tokens).

        Each distinct (unit, type) pair is embedded and projected once (tokens outnumber them ~10x); in
        inference the table of every pair in the vocabulary is kept between calls (see inference_cache)."""
        if caching_allowed() and self.token_kv_table_floats() <= MAX_CACHED_KV_FLOATS:
            table = self._cache.get(
                "token_kv",
                (self.unit_emb, self.token_type_emb, self.encoder.norm_ctx, self.encoder.attn.to_kv),
                (),
                self.token_kv_table,
            )
            return F.embedding(units * N_TOKEN_TYPES + types, table)  # a fresh gather: safe to rotate in place
        pairs, row = self._distinct_pairs(units, types)  # (K,), (B, n_tokens)
        return F.embedding(row, self._pair_kv(pairs))  # a row gather, 3x faster than table[row]

    def latents_at(self, latent_ids: torch.Tensor, latent_times: torch.Tensor) -> LatentQueries:
        """The latents (B, n_latents, dim) of ids at times (B, n_latents) before they read the tokens, their
        rotations, the encoder's rotated queries and the processor's rotations (`latent_queries`): the same for
        every window of a latent layout (kept in inference)."""
        if not caching_allowed():
            return self.latent_queries(latent_ids, self.rotary(latent_times))
        return self._cache.get(
            "latents",
            (self.latent_emb, self.encoder.norm_q, self.encoder.attn.to_q),
            (latent_ids, latent_times),
            lambda: self.latent_queries(latent_ids, self.rotary(latent_times)),
        )

    def _output_queries(self, sessions: torch.Tensor, times: torch.Tensor) -> OutputQueries:
        return self.output_queries(self.session_emb(sessions), self.rotary(times))  # (B, n_queries, ...)

    def outputs_at(self, sessions: torch.Tensor, times: torch.Tensor) -> OutputQueries:
        """The output queries (B, n_queries, dim) (each its session's embedding), their rotations and the decoder's
        rotated queries: the same for every window with the same query times (kept in inference)."""
        if not caching_allowed():
            return self._output_queries(sessions, times)
        return self._cache.get(
            "outputs",
            (self.session_emb, self.decoder.norm_q, self.decoder.attn.to_q),
            (sessions, times),
            lambda: self._output_queries(sessions, times),
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        """Normalised predictions (B, n_queries, max_task_dim) for a padded batch of windows."""
        # 1. tokens: a token's keys and values depend only on its (unit, type), rotated by its time
        token_kv = self.token_kv(batch.input_units, batch.input_types)  # (B, n_tokens, 2 * inner)
        token_rot = self.rotary(batch.input_times)  # (B, n_tokens, 1, head_dim / 2) complex rotations

        # 2. latents: learned ids on a time grid read the window's tokens (cross-attention, padding masked)
        lat = self.latents_at(batch.latent_ids, batch.latent_times)
        latents = self.encode(
            lat.latents, lat.rot, TokenKV(token_kv, token_rot, batch.input_mask), lat.q
        )  # (B, n_latents, dim)

        # 3. processed latents: self-attention among the latents (rotations laid out per head once, for all blocks)
        latents = self.process(latents, lat.proc_rot)  # (B, n_latents, dim)

        # 4. output queries: the session embedding at each query's time reads the latents
        out = self.decode(self.outputs_at(batch.output_sessions, batch.output_times), latents, lat.rot)

        # 5. readout: each query through its task's linear head
        return self.readout(out, batch.output_tasks)  # (B, n_queries, max_task_dim)

    def n_parameters(self, with_vocab: bool = False) -> int:
        """Parameter count; by default without the unit and session tables, which grow with data."""
        skip = set() if with_vocab else {id(self.unit_emb.weight), id(self.session_emb.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)
