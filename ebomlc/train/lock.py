"""One writer per run directory: an exclusive ``flock`` on ``<dir>/.lock``, held while a run writes there.

The operating system releases the lock when its holder exits, however it exits (``kill -9``
included), so a killed run never blocks its own ``--resume``. The lock file records its holder (pid,
host, since when), which a refused second writer names.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from ..errors import EbomlcError

LOCK_FILE = ".lock"
#: How long a refused writer waits for the holder's details to appear (the holder writes them just
#: after taking the lock).
HOLDER_WAIT_S = 1.0


class RunLocked(EbomlcError):
    """Another live process holds the run directory's lock."""


def holder_info() -> dict:
    """This process as a lock holder: ``pid``, ``host``, ``since`` (ISO time, UTC)."""
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": since}


def describe_holder(info: dict | None) -> str:
    """``pid 4242 on node1 since 2026-01-01T10:00:00+00:00`` (or a note when the holder wrote nothing)."""
    if not info:
        return "a process that has not written its details yet"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


def read_holder(folder: Path) -> dict | None:
    """The holder details recorded in ``folder``'s lock file (None if absent or unreadable)."""
    try:
        return json.loads((Path(folder) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None


class RunLock:
    """The exclusive lock of one run directory; ``acquire`` creates the directory when need be, and
    ``release`` removes what ``acquire`` created (the lock file, and the directory if it is left empty)."""

    def __init__(self, folder: str | Path, what: str = "run directory",
                 hint: str = "wait for it to end, or choose another --out/--runid"):
        self.folder = Path(folder)
        self.what, self.hint = what, hint
        self.fd: int | None = None
        self.created: Path | None = None  # the topmost directory acquire created

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLocked` naming its holder (nothing is written then)."""
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.created = missing[-1] if missing else None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EbomlcError(f"cannot create {self.what} {self.folder}: {exc.strerror or exc}") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise EbomlcError(f"cannot lock {self.what} {self.folder}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(f"{self.what} {self.folder} is in use by another run ({describe_holder(self._wait_holder())}); "
                                f"{self.hint}") from None
            try:  # the file may have been removed (a releasing holder) after we opened it: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder_info()) + "\n").encode())
        self.fd = fd
        return self

    def _wait_holder(self) -> dict | None:
        deadline = time.monotonic() + HOLDER_WAIT_S
        info = read_holder(self.folder)
        while not info and time.monotonic() < deadline:
            time.sleep(0.05)
            info = read_holder(self.folder)
        return info

    def release(self, remove_created: bool = False) -> None:
        """Unlock; remove the lock file (its holder details are stale now) and, with ``remove_created``,
        the directory if ``acquire`` created it and nothing else was written there."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None
        if remove_created and self.created is not None:
            for folder in (self.folder, *self.folder.parents):
                try:
                    folder.rmdir()  # only if empty
                except OSError:
                    break
                if folder == self.created:
                    break


@contextlib.contextmanager
def run_lock(folder: str | Path, what: str = "run directory") -> Iterator[RunLock]:
    """Hold ``folder``'s lock for the ``with`` block (see :class:`RunLock`)."""
    lock = RunLock(folder, what).acquire()
    try:
        yield lock
    finally:
        lock.release()
