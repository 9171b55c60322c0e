"""Study locations: a local directory or a cloud URI (``s3://``, ``gs://``), read through pyarrow."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from ebomlc.errors import EbomlcError

DEFAULT_STORAGE = "runs/studies"
SPEC_FILE = "study.yaml"
#: The running driver's heartbeat in the study directory (not ``*.json``: Tune copies those back on resume).
HEARTBEAT_FILE = ".driver-heartbeat"


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def resolve(location: str | Path) -> str:
    """An absolute local path (as text) or the URI unchanged, without a trailing slash."""
    if is_uri(location):
        return str(location).rstrip("/")
    return str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts])


def as_path(location: str) -> Path | str:
    """``Path`` for a local location, the URI text otherwise (``Path`` would mangle ``//``)."""
    return location if is_uri(location) else Path(location)


def exists(location: str) -> bool:
    with _access(location):
        if not is_uri(location):
            return Path(location).exists()
        import pyarrow.fs

        fs, path = _fs(location)
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_text(location: str) -> str:
    with _access(location):
        if not is_uri(location):
            return Path(location).read_text()
        fs, path = _fs(location)
        with fs.open_input_stream(path) as f:
            return f.read().decode()


def read_text_if_exists(location: str) -> str | None:
    """The text of ``location``, or None where there is no such file (or it vanished meanwhile)."""
    try:
        with _access(location):
            if not is_uri(location):
                return Path(location).read_text(errors="replace")
            fs, path = _fs(location)
            with fs.open_input_stream(path) as f:
                return f.read().decode(errors="replace")
    except EbomlcError:
        if not exists(location):
            return None
        raise


def listdir(location: str) -> dict[str, bool]:
    """The entries of directory ``location``: name -> whether it is a directory ({} if missing)."""
    with _access(location):
        if not is_uri(location):
            folder = Path(location)
            if not folder.is_dir():
                return {}
            return {entry.name: entry.is_dir() for entry in os.scandir(folder)}
        import pyarrow.fs

        fs, path = _fs(location)
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        return {info.base_name: info.type == pyarrow.fs.FileType.Directory for info in infos}


def remove(location: str) -> None:
    """Delete the file ``location`` if it is there."""
    with _access(location):
        if not is_uri(location):
            Path(location).unlink(missing_ok=True)
            return
        import pyarrow.fs

        fs, path = _fs(location)
        if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            fs.delete_file(path)


def write_text(location: str, text: str) -> None:
    """Write ``text`` to ``location``, making its parent; a local file is replaced atomically."""
    with _access(location):
        if not is_uri(location):
            from ebomlc.train.checkpoint import save_text

            save_text(text, location)
            return
        fs, path = _fs(location)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(text.encode())


def check_writable(location: str) -> None:
    """Fail early (before Ray starts) where a local ``location`` cannot be created: its nearest
    existing ancestor must be a writable directory. A URI is checked on first access."""
    if is_uri(location):
        return
    parent = Path(location)
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EbomlcError(f"cannot access {location}: {parent} is not a writable directory")


def _fs(location: str) -> tuple[Any, str]:
    """pyarrow's filesystem of a URI and the path on it (call inside ``_access``)."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(location)


@contextlib.contextmanager
def _access(location: str) -> Iterator[None]:
    """OS and pyarrow errors on ``location`` (bad scheme, unreachable, not a directory, no
    permission) as a one-line ``EbomlcError``."""
    errors: tuple[type[Exception], ...] = (OSError,)
    if is_uri(location):
        import pyarrow

        errors += (pyarrow.ArrowInvalid,)
    try:
        yield
    except errors as exc:
        lines = str(exc).strip().splitlines()
        raise EbomlcError(f"cannot access {location}: {lines[0] if lines else type(exc).__name__}") from None
