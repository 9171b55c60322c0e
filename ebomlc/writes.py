"""Atomic file writes: a crash or a failing write (full disk, no permission) leaves either the old
file or the new one, never half of one, and a failing write is one :class:`~ebomlc.errors.StorageError`
line naming the file and what to do. No torch here: analysis and the CLI write through it too."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import StorageError

#: The hint of a failed write when the caller gives none.
WRITE_HINT = "free space on its file system (or fix its permissions) and run again"


def write_failure(path: str | Path, exc: BaseException, hint: str = WRITE_HINT) -> StorageError:
    """The one-line error of a failed write of ``path``: ``cannot write PATH: no space left on device; HINT``."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror[0].lower() + exc.strerror[1:]
    else:
        lines = str(exc).strip().splitlines()
        reason = lines[0][:160] if lines else type(exc).__name__
    return StorageError(f"cannot write {path}: {reason}; {hint}", path=str(path), reason=reason)


@contextlib.contextmanager
def writing(path: str | Path, hint: str = WRITE_HINT) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into :func:`write_failure`'s one line, and give a
    ``StorageError`` raised inside (the file it names kept) this ``hint``."""
    try:
        yield
    except StorageError as exc:
        raise StorageError(f"cannot write {exc.path}: {exc.reason}; {hint}", path=exc.path, reason=exc.reason) from None
    except OSError as exc:
        raise write_failure(path, exc, hint) from None


def _atomic(path: Path, write, hint: str = WRITE_HINT) -> None:
    """``write(f)`` into a temporary file beside ``path``, flushed to disk, then renamed over ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_failure(path, exc, hint) from None
        raise


def save_bytes(data: bytes, path: str | Path, hint: str = WRITE_HINT) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic(Path(path), lambda f: f.write(data), hint)


def save_text(text: str, path: str | Path, hint: str = WRITE_HINT) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic(Path(path), lambda f: f.write(text.encode()), hint)


def save_json(obj: Any, path: str | Path, hint: str = WRITE_HINT) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (arrays as lists, other objects as text)."""
    _atomic(Path(path), lambda f: f.write((json.dumps(obj, indent=2, default=_jsonable) + "\n").encode()), hint)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
