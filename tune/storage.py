"""Study locations: a local directory or a cloud URI (``s3://``, ``gs://``), read through pyarrow."""
from __future__ import annotations

from pathlib import Path

DEFAULT_STORAGE = "runs/studies"


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
    if not is_uri(location):
        return Path(location).exists()
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_text(location: str) -> str:
    if not is_uri(location):
        return Path(location).read_text()
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(location: str, text: str) -> None:
    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_text(text)
        return
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())
