"""The one error every reader and Dataset raises for bad input on disk."""

from __future__ import annotations

from pathlib import Path


class DatasetFormatError(ValueError):
    """A dataset on disk breaks the layout its reader expects.

    The message starts with ``path:line:`` (or ``path:``), like a compiler error, so the
    user can open the file at fault. ``path`` defaults to None only so that the error can
    be rebuilt from its message alone, as torch's DataLoader does when a worker raises.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.reason = message
        self.path = Path(path) if path is not None else None
        self.line = line
        if path is None:
            where = ""
        elif line is None:
            where = f"{path}: "
        else:
            where = f"{path}:{line}: "
        super().__init__(where + message)

    def __reduce__(self):
        return type(self), (self.reason, self.path, self.line)
