"""Atomic file writes and safe checkpoint reads.

A crash or a failing write (full disk, no permission) leaves either the old file or the new one,
never half of one; a failing write is a one-line :class:`~ebomlc.errors.StorageError` naming the file.
Checkpoints load with ``torch.load(weights_only=True)``: tensors, containers, numbers, strings and
numpy arrays, never code stored in the file.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import EbomlcError, StorageError

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
    """Turn an ``OSError`` raised while writing ``path`` into :func:`write_failure`'s one line."""
    try:
        yield
    except OSError as exc:
        raise write_failure(path, exc, hint) from None


def _atomic(path: Path, write) -> None:
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
            raise write_failure(path, exc) from None
        raise


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` to memory, then the bytes to a temporary file renamed over ``path`` (a full disk
    is then an ``OSError`` of the write, not a failure inside torch's zip writer)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic(Path(path), lambda f: f.write(buffer.getbuffer()))


def checkpoint_safe_globals() -> list:
    """The few non-tensor types an ebomlc checkpoint may hold beyond what ``weights_only`` allows:
    numpy arrays, dtypes and scalars (method state such as GLC's corruption matrix)."""
    from ..data.labels import _numpy_safe_globals

    return _numpy_safe_globals()


class UnsafeCheckpoint(EbomlcError):
    """A checkpoint holding Python objects other than tensors, containers, numbers, strings and arrays."""


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :func:`checkpoint_safe_globals` allowed; a file that
    holds anything else (a pickled callable, a class instance) is refused with :class:`UnsafeCheckpoint`
    and nothing in it runs."""
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the loader's UnpicklingError; named below when unsafe
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise UnsafeCheckpoint(
                f"{path} holds Python objects other than tensors and arrays ({', '.join(unsafe[:3])}), which "
                f"are not loaded since they could run code; use a checkpoint written by ebomlc, or start "
                f"afresh with another --out") from None
        raise


def _unsafe_globals(path: str | Path) -> list[str]:
    """The globals of checkpoint ``path`` outside :func:`checkpoint_safe_globals` (``[]`` if unreadable)."""
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in checkpoint_safe_globals()}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: keep the loader's own message
        return []
    return [g for g in found if g not in allowed]


def save_json(obj: Any, path: str | Path) -> None:
    _atomic(Path(path), lambda f: f.write((json.dumps(obj, indent=2, default=_jsonable) + "\n").encode()))


def save_text(text: str, path: str | Path) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
