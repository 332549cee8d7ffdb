"""Simulated multi-animal, multi-session motor cortex: reaching kinematics and cosine-tuned Poisson spikes.

Each animal owns a pool of neurons (preferred direction, baseline rate, modulation gain); each session
records an overlapping random subset of its animal's pool. Hand kinematics are minimum-jerk reaches
(center-out to 8 targets, or to random targets) sampled at 100 Hz; spikes are inhomogeneous Poisson,
drawn by time rescaling, with neural activity leading movement by ~100 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .session import Behavior, DataError, Intervals, Session
from .splits import make_splits
from .storage import write_session

FS = 100.0  # behaviour sampling rate, Hz
LAG = 0.1  # s by which neural activity leads movement
V_REF = 20.0  # cm/s, speed at which a unit reaches its full modulation
RADIUS = 10.0  # cm, center-out target distance
WORKSPACE = 12.0  # cm, radius of the disk holding random targets
TASKS = ("center_out", "random_target", "mixed")
MAX_RATE = 150.0  # Hz, ceiling on the instantaneous rate


@dataclass
class UnitPool:
    """Tuning of one animal's neurons: preferred direction (rad), baseline and gains (Hz)."""

    pd: np.ndarray
    baseline: np.ndarray
    gain: np.ndarray
    linear: np.ndarray
    speed: np.ndarray

    def __len__(self) -> int:
        return len(self.pd)


def make_pool(n: int, rng: np.random.Generator) -> UnitPool:
    """Draw `n` neurons with mean rates ~5-30 Hz and modulation depths comparable to baseline."""
    baseline = np.clip(rng.lognormal(np.log(8.0), 0.5, n), 2.0, 25.0)
    gain = baseline * rng.uniform(0.8, 2.0, n)
    return UnitPool(
        pd=rng.uniform(-np.pi, np.pi, n),
        baseline=baseline,
        gain=gain,
        linear=gain * rng.uniform(0.1, 0.3, n),
        speed=baseline * rng.uniform(0.0, 0.3, n),
    )


def _min_jerk(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-jerk position profile s(tau) on [0, 1] and its derivative."""
    return tau**3 * (10 - 15 * tau + 6 * tau**2), 30 * tau**2 * (1 - tau) ** 2


def _plan_trials(task: str, duration: float, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Movement segments (t0, dur, x0, y0, x1, y1, curvature) and the trials table, filling `duration`."""
    segs: list[tuple[float, ...]] = []
    trials: dict[str, list[float]] = {
        k: [] for k in ("start", "end", "target_id", "target_x", "target_y", "move_onset")
    }
    t, pos = 0.0, np.zeros(2)
    while True:
        hold = rng.uniform(0.3, 0.6)
        if task == "center_out":
            k = int(rng.integers(8))
            target = RADIUS * np.array([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)])
            reach = rng.uniform(0.6, 1.0)
            back = rng.uniform(0.5, 0.9)
            legs = [
                (pos, pos, hold),
                (pos, target, reach),
                (target, target, rng.uniform(0.2, 0.5)),
                (target, np.zeros(2), back),
            ]
        else:
            k = -1
            while True:
                r, a = WORKSPACE * np.sqrt(rng.uniform()), rng.uniform(-np.pi, np.pi)
                target = r * np.array([np.cos(a), np.sin(a)])
                if np.hypot(*(target - pos)) > 4.0:
                    break
            reach = 0.45 + 0.03 * np.hypot(*(target - pos)) + rng.uniform(0.0, 0.3)
            legs = [(pos, pos, hold), (pos, target, reach), (target, target, rng.uniform(0.3, 0.6))]
        total = sum(leg[2] for leg in legs)
        if t + total > duration:
            break
        trials["start"].append(t)
        trials["move_onset"].append(t + hold)
        for p0, p1, d in legs:
            segs.append((t, d, *p0, *p1, rng.normal(0.0, 0.08)))
            t += d
        trials["end"].append(t)
        trials["target_id"].append(k)
        trials["target_x"].append(target[0])
        trials["target_y"].append(target[1])
        pos = legs[-1][1]
    segs.append((t, max(duration - t, 1e-3), *pos, *pos, 0.0))
    return np.array(segs), {k: np.array(v) for k, v in trials.items()}


def _kinematics(segs: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hand position (cm) and velocity (cm/s) at times `ts` along the planned segments."""
    i = np.clip(np.searchsorted(segs[:, 0], ts, side="right") - 1, 0, len(segs) - 1)
    t0, dur, p0, p1, curv = segs[i, 0], segs[i, 1], segs[i, 2:4], segs[i, 4:6], segs[i, 6]
    tau = np.clip((ts - t0) / dur, 0.0, 1.0)
    s, ds = _min_jerk(tau)
    delta = p1 - p0
    normal = np.stack([-delta[:, 1], delta[:, 0]], axis=1) * curv[:, None]  # scaled by reach length
    bump, dbump = 16 * tau**2 * (1 - tau) ** 2, 32 * tau * (1 - tau) * (1 - 2 * tau)
    pos = p0 + delta * s[:, None] + normal * bump[:, None]
    vel = (delta * ds[:, None] + normal * dbump[:, None]) / dur[:, None]
    return pos, vel


def unit_rates(pool: UnitPool, vel: np.ndarray) -> np.ndarray:
    """Rates (T, N) in Hz: baseline + rectified cosine-times-speed + linear velocity + speed terms."""
    u = np.stack([np.cos(pool.pd), np.sin(pool.pd)])  # (2, N)
    drive = (vel.astype(np.float64) @ u) / V_REF  # = speed/V_REF * cos(theta - pd)
    speed = np.hypot(vel[:, 0], vel[:, 1])[:, None] / V_REF
    rate = pool.baseline + pool.gain * np.maximum(drive, 0.0) + pool.linear * drive + pool.speed * speed
    return np.clip(rate, 0.5, MAX_RATE)


def poisson_spikes(rate: np.ndarray, dt: float, t_start: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Inhomogeneous Poisson spike times per column of a piecewise-constant rate (T, N), by time rescaling."""
    n_t, n_units = rate.shape
    grid = t_start + dt * np.arange(n_t + 1)
    out = []
    for j in range(n_units):  # one vectorised draw per unit
        cum = np.concatenate([[0.0], np.cumsum(rate[:, j] * dt)])
        u = np.sort(rng.uniform(0.0, cum[-1], rng.poisson(cum[-1])))
        out.append(np.interp(u, cum, grid))
    return out


def _units_range(n_units: int | tuple[int, int]) -> tuple[int, int]:
    lo, hi = (n_units, n_units) if isinstance(n_units, (int, np.integer)) else (int(n_units[0]), int(n_units[1]))
    if lo < 1 or hi < lo:
        raise DataError(f"simulate: n_units must be a positive int or a (low, high) range, got {n_units!r}")
    return lo, hi


def simulate_session(
    pool: UnitPool,
    units: np.ndarray,
    session_id: str,
    task: str,
    duration: float,
    rng: np.random.Generator,
    meta: dict[str, str] | None = None,
) -> Session:
    """One session recording the pool indices `units` during `duration` seconds of reaching."""
    ts = np.arange(int(round(duration * FS))) / FS
    segs, table = _plan_trials(task, duration, rng)
    if len(table["start"]) < 3:
        raise DataError(f"simulate: duration {duration} s holds fewer than 3 trials; use at least 10 s")
    pos, vel = _kinematics(segs, ts)
    lead = int(round(LAG * FS))
    vel_lead = np.concatenate([vel[lead:], np.repeat(vel[-1:], lead, axis=0)])  # rate(t) follows vel(t + LAG)
    sub = UnitPool(pool.pd[units], pool.baseline[units], pool.gain[units], pool.linear[units], pool.speed[units])
    sub.baseline = sub.baseline * rng.lognormal(0.0, 0.1, len(units))  # small per-session drift
    spikes = poisson_spikes(unit_rates(sub, vel_lead), 1.0 / FS, 0.0, rng)
    names = [f"n{i:04d}" for i in units]
    trials = Intervals(table.pop("start"), table.pop("end"), {k: v for k, v in table.items()})
    trials.columns["target_id"] = trials.columns["target_id"].astype(np.int64)
    behavior = {
        "hand_velocity": Behavior("hand_velocity", ts, vel, unit="cm/s", dims=["vx", "vy"]),
        "hand_position": Behavior("hand_position", ts, pos, unit="cm", dims=["x", "y"]),
    }
    end = float(duration)
    return Session.from_unit_spikes(
        session_id,
        dict(zip(names, spikes)),
        behaviors=behavior,
        trials=trials,
        splits=make_splits(0.0, end, trials),
        unit_meta={
            "pool_index": np.asarray(units, np.int64),
            "preferred_direction": sub.pd,
            "baseline_rate": sub.baseline,
            "gain": sub.gain,
        },
        meta={"task": task, **(meta or {})},
        start=0.0,
        end=end,
    )


def simulate_sessions(
    n_animals: int = 2,
    sessions_per_animal: int = 3,
    n_units: int | tuple[int, int] = (80, 120),
    duration: float = 300.0,
    seed: int = 0,
    task: str = "center_out",
) -> list[Session]:
    """Simulate `n_animals` x `sessions_per_animal` sessions; deterministic from `seed`.

    task "mixed" alternates center_out and random_target across an animal's sessions.
    """
    if task not in TASKS:
        raise DataError(f"simulate: unknown task {task!r}; use one of {', '.join(TASKS)}")
    if duration < 10:
        raise DataError(f"simulate: duration must be at least 10 s, got {duration}")
    lo, hi = _units_range(n_units)
    sessions = []
    for a in range(n_animals):
        pool = make_pool(int(np.ceil(1.5 * hi)), np.random.default_rng([seed, a, 0]))
        for s in range(sessions_per_animal):
            rng = np.random.default_rng([seed, a, s + 1])
            n = int(rng.integers(lo, hi + 1))
            units = np.sort(rng.choice(len(pool), size=n, replace=False))
            sess_task = ("center_out", "random_target")[s % 2] if task == "mixed" else task
            meta = {
                "subject": f"animal{a}",
                "species": "simulated macaque",
                "lab": "spiketok simulator",
                "seed": str(seed),
            }
            sessions.append(simulate_session(pool, units, f"sim_a{a}_s{s}", sess_task, duration, rng, meta))
    return sessions


def simulate_to_folder(out_dir: str | Path, **kwargs) -> list[Path]:
    """Simulate sessions (kwargs of `simulate_sessions`) and write `<session_id>.h5` files into `out_dir`."""
    out = Path(out_dir)
    return [write_session(s, out / f"{s.id}.h5") for s in simulate_sessions(**kwargs)]


def binned_counts(session: Session, bin_size: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts (n_bins, n_units) in bins from session.start, and bin edges."""
    edges = np.arange(session.start, session.end + 1e-9, bin_size)
    b = np.searchsorted(edges, session.spike_times, side="right") - 1
    ok = (b >= 0) & (b < len(edges) - 1)
    counts = np.zeros((len(edges) - 1, session.n_units), np.float32)
    np.add.at(counts, (b[ok], session.spike_units[ok]), 1.0)
    return counts, edges


def ridge_r2(
    session: Session, bin_size: float = 0.05, history: int = 5, alpha: float = 1.0, behavior: str = "hand_velocity"
) -> float:
    """Sanity check: R^2 (mean over dims) of ridge regression from binned counts (+ history) on test trials."""
    counts, edges = binned_counts(session, bin_size)
    x = np.sqrt(counts)
    feats = np.concatenate([np.roll(x, k, axis=0) for k in range(history)], axis=1)
    beh = session.behavior(behavior)
    b = np.searchsorted(edges, beh.timestamps, side="right") - 1
    ok = (b >= 0) & (b < len(counts))
    n = np.bincount(b[ok], minlength=len(counts))
    y = (
        np.stack([np.bincount(b[ok], beh.values[ok, d], len(counts)) for d in range(beh.dim)], 1)
        / np.maximum(n, 1)[:, None]
    )
    mid = (edges[:-1] + edges[1:]) / 2
    valid = np.arange(len(counts)) >= history
    train = session.splits["train"].contains(mid) & valid
    test = session.splits["test"].contains(mid) & valid
    mu, sd = feats[train].mean(0), feats[train].std(0) + 1e-6
    xtr = np.c_[(feats[train] - mu) / sd, np.ones(train.sum())]
    xte = np.c_[(feats[test] - mu) / sd, np.ones(test.sum())]
    w = np.linalg.solve(xtr.T @ xtr + alpha * np.eye(xtr.shape[1]), xtr.T @ y[train])
    resid = ((y[test] - xte @ w) ** 2).sum(0)
    total = ((y[test] - y[test].mean(0)) ** 2).sum(0)
    return float(np.mean(1.0 - resid / total))
