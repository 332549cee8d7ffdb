"""Which behaviour to decode for a session: the one rule used by training, evaluation, baselines and streaming."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .session import DataError


class TargetError(DataError):
    """No single behaviour can be chosen for a session (missing, or several to choose from)."""


def resolve_target(
    session_id: str,
    available: Sequence[str] | None,
    requested: str | None = None,
    trained: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
) -> str:
    """The behaviour decoded for `session_id`, tried in this order:

    1. `trained[session_id]`: what a model was trained (or adapted) to decode for this session;
    2. the first of the comma-separated names in `requested` that the session has (`available`; when
       that is unknown, None, the model's `tasks`); without a model (`tasks` None) a request that
       matches nothing is an error;
    3. the only behaviour left: the model's only task the session has, or the session's only behaviour.
    """
    if trained and session_id in trained:
        return trained[session_id]
    names = list(available) if available is not None else list(tasks or [])
    if requested:
        for name in requested.split(","):
            if name in names:
                return name
        if tasks is None:
            raise TargetError(
                f"session {session_id}: no behaviour {requested!r}; it has {names}. Set `target` in the config."
            )
    left = names if tasks is None else [t for t in tasks if t in names]
    if len(left) == 1:
        return left[0]
    if tasks is None:
        raise TargetError(f"session {session_id}: {len(names)} behaviour signals {names}; choose one with target=NAME")
    raise TargetError(
        f"session {session_id}: cannot tell which behaviour to decode (it has {names}, the model "
        f"decodes {list(tasks)}); pass --target"
    )
