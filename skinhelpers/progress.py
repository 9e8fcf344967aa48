"""Progress bars that stay readable in a terminal, in JupyterLab and under papermill.

Interactive notebooks get tqdm's widget; batch runs (``SKINHELPERS_PROGRESS=plain``,
set by ``run_all.sh``) get one plain text line per update, at most every 10 s (and at
least every 60 s while the bar moves), so an executed notebook, its log file and the
terminal show a short readable log instead of hundreds of carriage-return redraws.
``SKINHELPERS_PROGRESS=off`` hides the bars.

:func:`is_progress_line` recognises a bar's text line (plain or tqdm's own), so that the
rendered report (:mod:`skinhelpers.run.report`) can leave the bars out of a chapter's
story and keep only each bar's last state in the version with code.
"""

from __future__ import annotations

import logging
import os
import re
import sys

PLAIN_MININTERVAL = 10.0  # seconds between two plain lines
PLAIN_MAXINTERVAL = 60.0

# tqdm's bar: "desc: 40%|####      | 4/10 [00:01<00:02, 3.1it/s]" (ascii or unicode bar),
# and its form without a total: "desc: 12it [00:03, 3.9it/s]"
_BAR = re.compile(
    r"^(?P<desc>.*?)(?::\s*)?\s*\d{1,3}%\|.*\|\s*[\d.]+[kMGTP]?/[\d.?]+[kMGTP]?"
    r"\s*\[[\d:?]+(<[\d:?]+)?(,.*)?\]\s*$"
)
_NO_TOTAL = re.compile(
    r"^(?P<desc>.*?)(?::\s*)?\s*[\d.]+[kMGTP]?[A-Za-z]* \[[\d:]+, [^\]]*(/s|s/)[^\]]*\]\s*$"
)

log = logging.getLogger(__name__)


def progress_match(line: str) -> re.Match | None:
    """The match of a progress bar's text line (``group("desc")``: its description)."""
    line = line.rstrip()
    return _BAR.match(line) or _NO_TOTAL.match(line)


def is_progress_line(line: str) -> bool:
    """Whether ``line`` is one state of a progress bar (tqdm's format, plain or not)."""
    return progress_match(line) is not None


def _mode() -> str:
    mode = os.environ.get("SKINHELPERS_PROGRESS", "").lower()
    if mode in {"plain", "off", "auto"}:
        return mode
    return "auto"


class LineWriter:
    """A file for tqdm that turns each carriage-return redraw into one finished line.

    tqdm redraws a bar as ``"\\r" + bar + padding``; written as is, a log file collects
    every redraw on one endless line. Here each redraw becomes ``bar + "\\n"`` and the
    empty writes tqdm makes when it clears or closes a bar are dropped.
    """

    def __init__(self, stream=None):
        self.stream = stream

    def write(self, text: str) -> int:
        stream = self.stream or sys.stdout
        for part in text.replace("\r", "\n").split("\n"):
            part = part.rstrip()
            if part:
                stream.write(part + "\n")
        return len(text)

    def flush(self) -> None:
        (self.stream or sys.stdout).flush()


def progress(iterable=None, **kwargs):
    """``tqdm`` with defaults that suit the environment (pass any tqdm keyword)."""
    mode = _mode()
    if mode == "off":
        kwargs["disable"] = True
    if mode == "plain":
        from tqdm import tqdm

        kwargs.setdefault("mininterval", PLAIN_MININTERVAL)
        kwargs.setdefault("maxinterval", PLAIN_MAXINTERVAL)
        kwargs["file"] = LineWriter(kwargs.get("file"))
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
