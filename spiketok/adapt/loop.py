"""A small training loop for adaptation: random windows, AdamW, early stopping on held-out windows.

Adaptation runs are short (a few hundred steps on a few trials), so this is a plain torch loop with
the best weights kept in memory, rather than a Lightning run with checkpoint files.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ..data.samplers import RandomWindowBatchSampler
from ..data.storage import StoredSession
from ..data.windows import causal_windows, default_stride, sliding_windows
from ..model.meta import StageResult
from ..model.normalize import normalised_targets
from ..model.objective import warmup_cosine, weighted_mse
from ..model.poyo import POYO
from ..tokenize import Batch, collate
from ..tokenize.dataset import WindowDataset
from .data import single_session_dataset


def batch_loss(model: POYO, batch: Batch) -> torch.Tensor:
    """Weighted MSE of the normalised targets (the training loss)."""
    target, dim_mask = normalised_targets(model, batch)
    return weighted_mse(model(batch), target, batch.output_weights, dim_mask)


@torch.no_grad()
def validation_loss(model: POYO, batches: list[Batch]) -> float:
    """Loss over all held-out windows, each batch weighted by its total sample weight."""
    was_training = model.training
    model.eval()
    total, weight = 0.0, 0.0
    for batch in batches:
        w = float(batch.output_weights.sum())
        total += float(batch_loss(model, batch)) * w
        weight += w
    model.train(was_training)
    return total / max(weight, 1e-8)


def fit(
    model: POYO,
    session: StoredSession,
    target: str,
    param_groups: list[dict],
    name: str,
    max_steps: int,
    batch_size: int = 16,
    eval_every: int = 10,
    patience: int = 5,
    warmup_steps: int = 10,
    grad_clip: float = 1.0,
    unit_dropout: bool = True,
    min_units: int = 8,
    causal: bool = False,
    seed: int = 0,
    progress: bool = True,
    start_competes: bool = False,
) -> StageResult:
    """Train the parameters in `param_groups` on `session.splits["train"]` (random windows).

    With a non-empty `session.splits["valid"]`, the loss on its sliding windows (every `default_stride`
    s, as evaluation lays them) is checked every
    `eval_every` steps; training stops after `patience` checks without
    improvement and the best weights are put back. Without it, all `max_steps` steps run.
    `causal`: windows with one output at their end, as the model was trained (train cfg `causal`).
    `start_competes`: the starting weights may win (fine-tuning may keep the unit-id result); else
    (fresh embeddings or a fresh model) the best is chosen among the checks after training began.
    """
    t_start = time.monotonic()
    data = single_session_dataset(session)
    targets = {session.id: target}
    window = model.config.window
    train_set = WindowDataset.for_model(
        model, data, targets, unit_dropout=unit_dropout, min_units=min_units, causal=causal, seed=seed
    )
    eval_set = WindowDataset.for_model(model, data, targets, causal=causal)
    sampler = RandomWindowBatchSampler({session.id: session.splits["train"]}, window, batch_size, eval_every, seed=seed)
    valid = session.splits.get("valid")
    make_windows = causal_windows if causal else sliding_windows
    specs = make_windows(valid, window, default_stride(model), session.id) if valid is not None and len(valid) else []
    device = next(model.parameters()).device
    val_batches = [
        collate([eval_set[s] for s in specs[i : i + batch_size]]).to(device) for i in range(0, len(specs), batch_size)
    ]
    params = [p for g in param_groups for p in g["params"]]
    optimizer = torch.optim.AdamW(param_groups, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, max_steps))

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]

    best_loss = validation_loss(model, val_batches) if val_batches and start_competes else float("inf")
    best_state, best_step, bad, step, stopped = None, 0, 0, 0, False
    if val_batches and start_competes:
        best_state = snapshot()
    model.train()
    bar = tqdm(total=max_steps, desc=name, disable=not progress, leave=False)
    epoch = 0
    while step < max_steps and not stopped:
        sampler.set_epoch(epoch)  # each draw of a window, even of the same short trial, drops other units
        epoch += 1
        for window_specs in sampler:
            loss = batch_loss(model, collate([train_set[s] for s in window_specs]).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            schedule.step()
            step += 1
            bar.update(1)
            if step >= max_steps:
                break
        if val_batches:
            loss_now = validation_loss(model, val_batches)
            bar.set_postfix(val_loss=f"{loss_now:.3f}", best=f"{min(best_loss, loss_now):.3f}")
            if loss_now < best_loss - 1e-4:
                best_loss, best_state, best_step, bad = loss_now, snapshot(), step, 0
            else:
                bad += 1
                stopped = bad >= patience
    bar.close()
    if best_state is not None:
        with torch.no_grad():
            for p, saved in zip(params, best_state):
                p.copy_(saved)
    else:
        best_step = step
    best = best_loss if val_batches and best_loss != float("inf") else None
    return StageResult(name, step, best_step, best, stopped, time.monotonic() - t_start)
