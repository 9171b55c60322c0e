"""Checkpoint files: written atomically (:mod:`ebomlc.writes`) and read safely.

Checkpoints load with ``torch.load(weights_only=True)``: tensors, containers, numbers, strings and
numpy arrays, never code stored in the file.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..errors import EbomlcError
from ..writes import _atomic, save_bytes, save_json, save_text, write_failure, writing  # noqa: F401 - re-exported


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
