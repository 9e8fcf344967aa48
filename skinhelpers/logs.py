"""The ``skinhelpers`` logger tree: everything the library says goes through it.

Every module logs to ``logging.getLogger(__name__)``. At import, the package gives its root
logger (``skinhelpers``) one handler that writes the bare message to *the current*
``sys.stdout`` (a notebook cell's output, the terminal, pytest's capture), at level INFO:
what the library printed before, it still shows, word for word, and a run's notebook log
keeps it. :func:`configure` changes the level once, for a notebook (``-p log_level``,
through the environment variable ``SKINHELPERS_LOG_LEVEL`` that the pipeline sets for its
kernels), the command line (``-q``/``--verbose``) or a user's script; warnings and errors
always show. A user may also add handlers (a file, a logging service) to the ``skinhelpers``
logger, or silence it, with the standard ``logging`` calls. Progress bars are not log
records (:mod:`skinhelpers.progress`).
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "skinhelpers"
ENV = "SKINHELPERS_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CurrentStdout(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stdout`` is when a record is emitted (errors:
    ``sys.stderr``, as they were printed before)."""

    def __init__(self):
        self._error = False
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self._error = record.levelno >= logging.ERROR  # under the handler's lock
        super().emit(record)

    @property
    def stream(self):
        return sys.stderr if self._error else sys.stdout

    @stream.setter
    def stream(self, value):  # logging sets it in __init__; the current stdout wins
        pass


def parse_level(level: str | int | None) -> int:
    """``"info"``, ``"WARNING"``, ``20``, ... -> a logging level; a clear error otherwise."""
    if level is None or level == "":
        return logging.INFO
    if isinstance(level, int):
        return level
    name = str(level).strip().upper()
    if name not in LEVELS:
        raise ValueError(f"log_level must be one of {list(LEVELS)}, got {level!r}")
    return getattr(logging, name)


def install() -> logging.Logger:
    """Give the ``skinhelpers`` logger its stdout handler (once) at the level of
    ``SKINHELPERS_LOG_LEVEL`` (INFO when unset)."""
    log = logging.getLogger(ROOT)
    if not any(isinstance(h, CurrentStdout) for h in log.handlers):
        h = CurrentStdout()
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
        log.propagate = False  # shown once, not again by a root handler
    try:
        log.setLevel(parse_level(os.environ.get(ENV)))
    except ValueError:
        log.setLevel(logging.INFO)
    return log


def configure(level: str | int | None = None) -> int:
    """Set the level of everything the library says (INFO by default); return it."""
    lvl = parse_level(level)
    install().setLevel(lvl)
    return lvl


__all__ = ["CurrentStdout", "ENV", "LEVELS", "ROOT", "configure", "install", "parse_level"]
