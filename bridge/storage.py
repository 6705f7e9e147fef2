"""When the database cannot be written: which errors mean that, who is failing since when, and a state
file that still tells `status` about it.

A full disk, an I/O error or a database locked past its busy timeout is a storage failure: the item is
kept and retried, never dropped (bridge/workers/store_writer.py, bridge/workers/delivery.py). Any other
exception is a bug in one item. The supervision ticker turns a failure that lasts into the `storage`
fault (log, metric, health topic, this state file) and clears it when writes succeed again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

# sqlite3's errors that say nothing about the storage itself: the statement or its values are wrong
_ITEM_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.DataError)


def is_storage_error(e: BaseException) -> bool:
    """True for a failure of the database or the disk under it, false for a bug in one item."""
    if isinstance(e, _ITEM_ERRORS):
        return False
    return isinstance(e, (sqlite3.DatabaseError, OSError))


class StorageHealth:
    """Which parts of the bridge cannot write (the store writer, each delivery worker), since when.

    Thread-safe: every writer reports here; the supervision ticker reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[float, float, str]] = {}  # who -> (monotonic since, wall since, error)
        self.failures = 0  # write attempts that failed, all parts together

    def failed(self, who: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._lock:
            self.failures += 1
            since = self._failing.get(who)
            self._failing[who] = (since[0], since[1], text[:200]) if since else (time.monotonic(), time.time(),
                                                                                   text[:200])

    def succeeded(self, who: str) -> None:
        if who in self._failing:
            with self._lock:
                self._failing.pop(who, None)

    def failing(self) -> tuple[float, float, str] | None:
        """(seconds failing, wall-clock since, error) of the longest failure now, or None."""
        with self._lock:
            if not self._failing:
                return None
            mono, wall, error = min(self._failing.values())
        return time.monotonic() - mono, wall, error


class StateFile:
    """A small file the bridge rewrites in place every tick: `status` reads from it that the bridge is
    alive and whether its storage fails, which the database cannot say when it is the thing failing.
    Its size is fixed when it is created, so writing it needs no new disk space: it works on a full disk."""

    SIZE = 1024

    def __init__(self, path: str | Path):
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < self.SIZE:
                os.pwrite(fd, b" " * self.SIZE, 0)  # real bytes, not a sparse hole: the blocks are ours
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def write(self, state: dict) -> None:
        data = json.dumps(state, separators=(",", ":")).encode()
        if len(data) > self.SIZE:
            data = json.dumps({k: state[k] for k in ("alive", "bridge_id") if k in state}).encode()
        os.pwrite(self._fd, data.ljust(self.SIZE), 0)

    def close(self) -> None:
        os.close(self._fd)


def state_file_path(db_path: str | Path, bridge_id: str) -> Path:
    return Path(f"{db_path}.{bridge_id}.state")


def read_states(db_path: str | Path) -> list[dict]:
    """The state files of every bridge on this database (several processes may share it)."""
    p = Path(db_path)
    out = []
    for f in sorted(p.parent.glob(p.name + ".*.state")):
        try:
            out.append(json.loads(f.read_bytes().strip() or b"{}"))
        except (OSError, ValueError):
            continue
    return out


def db_bytes(db_path: str | Path) -> int:
    """The database's size on disk: the file, its write-ahead log and shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{db_path}{suffix}").st_size
        except OSError:
            pass
    return total
