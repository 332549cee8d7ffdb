"""Sessions, readers, storage, samplers and the simulator."""

from .session import Behavior, DataError, Intervals, Session, SessionLike, Window
from .storage import SessionDataset, StoredSession, read_session, write_session

__all__ = [
    "Behavior",
    "DataError",
    "Intervals",
    "Session",
    "SessionLike",
    "Window",
    "SessionDataset",
    "StoredSession",
    "read_session",
    "write_session",
]
