"""Persistent sync state: base entries for the three-way comparison and the operation log."""

from syncd.state.store import (
    BaseEntry,
    OpRecord,
    RemoteSeen,
    StateError,
    StateStore,
    StateWriteError,
    move_aside,
    sqlite_path,
)

__all__ = [
    "BaseEntry",
    "OpRecord",
    "RemoteSeen",
    "StateError",
    "StateStore",
    "StateWriteError",
    "move_aside",
    "sqlite_path",
]
