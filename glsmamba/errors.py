"""Exceptions with messages meant for users: they name the file and the record at fault."""
from __future__ import annotations


class GlsmambaError(Exception):
    """Base class; the CLI prints these without a traceback."""


class DataError(GlsmambaError, ValueError):
    """Bad input data: a missing image, a malformed annotation, a degenerate box ..."""

    def __init__(self, message: str, path: str | None = None, record: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if record is not None:
                where += f" [{record}]"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.record = record


class CheckpointError(GlsmambaError):
    """A checkpoint that cannot be read or does not match the model."""


class ConfigError(GlsmambaError, ValueError):
    """An unknown key or an invalid value in a config or a --set override."""
