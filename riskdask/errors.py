"""Errors a user can act on.

Everything a user got wrong -- a config key, a value out of range, a malformed input file --
raises :class:`InputError` (or its subclass :class:`ConfigError`). The CLI turns it into one
line that names the file, row, column or key, and exit code 2. Anything else is a bug or an
environment failure and exits 1.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "ConfigError", "ClusterUnavailable", "OutputError", "EXIT_OK",
           "EXIT_FAILURE", "EXIT_BAD_INPUT"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad user input, located as precisely as we can.

    Parameters
    ----------
    message : str
        What is wrong, in words a user understands.
    file : str or Path, optional
        The file the problem is in.
    row : int, optional
        1-based data row (the header is row 0), as a spreadsheet user would count.
    column : str, optional
        The column name.
    key : str, optional
        A dotted config key, e.g. ``simulation.n_scenarios``.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, row: int | None = None,
                 column: str | None = None, key: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.column = column
        self.key = key
        super().__init__(self.__str__())

    def location(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.key is not None:
            where.append(f"key '{self.key}'")
        if where:
            parts.append(", ".join(where))
        return ": ".join(parts)

    def __str__(self) -> str:
        loc = self.location()
        return f"{loc}: {self.message}" if loc else self.message


class ConfigError(InputError):
    """A config file or ``--set`` override that does not validate."""


class ClusterUnavailable(InputError):
    """The cluster the user pointed at cannot be used: the scheduler refuses or does not
    answer within the connect timeout, or it has no workers after the wait for them.

    Exit code 2 like a bad config: the address (or spec) the user gave is what needs fixing,
    and the message names it. Not a :class:`ConfigError`, so it is never blamed on the job's
    config file.
    """


class OutputError(Exception):
    """Writing a run's outputs failed (disk full, permissions ...); the message names the file
    or folder. Exit code 1: the environment, not the input, needs fixing."""
