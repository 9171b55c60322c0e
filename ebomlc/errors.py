"""User-facing errors: one clear line saying what is wrong and how to fix it."""


class EbomlcError(Exception):
    """A problem with the user's input (bad option, missing data, existing run directory).

    The CLI prints ``error: <message>`` and exits with status 2; library callers can catch it.
    """


class DataError(EbomlcError):
    """Missing, corrupt or malformed dataset files."""


class ConfigError(EbomlcError):
    """An option value that is out of range or inconsistent with the others."""


class StorageError(EbomlcError):
    """A write that failed (no space left, no permission): names the file and what to do."""

    def __init__(self, message: str, path: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.path, self.reason = path, reason
