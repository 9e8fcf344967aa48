"""papermill's notebook client, writing the executed notebook less often.

papermill writes the whole executed notebook (figures included, schema-validated) when it
starts, before and after every cell, and every 30 s of a long cell: 444 writes for the
demo run's eight notebooks, 5.5 s of a 64 s run spent with the kernel idle. A batch run
streams every output line to the terminal and its log as it comes
(:mod:`skinhelpers.run.execute`), so the notebook file need not follow each cell: here it
is written at the start, then at most every :data:`SAVE_EVERY_S` seconds while it runs,
and always at the end, however the run ends (papermill's own final save, which also keeps
the cell that was running when a kernel died or timed out).

:func:`register` makes the engine known to papermill under :data:`ENGINE`.
"""

from __future__ import annotations

import logging

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

log = logging.getLogger(__name__)

ENGINE = "skinlab"
SAVE_EVERY_S = 10.0


class SparseSaves(NotebookExecutionManager):
    """papermill's execution record, its intermediate writes at most every
    :data:`SAVE_EVERY_S` seconds; the first and the last are always made."""

    _force = False

    def save(self, **kwargs):
        if kwargs.get("nb"):  # papermill's callbacks may pass a new copy of the notebook
            self.nb = kwargs["nb"]
        since = (self.now() - self.last_save_time).total_seconds()
        if self._force or since >= SAVE_EVERY_S:
            super().save()
            log.debug("wrote %s (%.1f s after the last write)", self.output_path, since)

    def notebook_start(self, **kwargs):
        self._force = True
        try:
            super().notebook_start(**kwargs)
        finally:
            self._force = False

    def notebook_complete(self, **kwargs):
        self._force = True  # the final write, whatever the way the notebook ended
        super().notebook_complete(**kwargs)


class SparseSavesEngine(NBClientEngine):
    """papermill's nbclient engine with :class:`SparseSaves` as its execution record."""

    @classmethod
    def execute_notebook(
        cls,
        nb,
        kernel_name,
        output_path=None,
        progress_bar=True,
        log_output=False,
        autosave_cell_every=30,
        **kwargs,
    ):
        # papermill's Engine.execute_notebook, with the record class swapped
        nb_man = SparseSaves(
            nb,
            output_path=output_path,
            progress_bar=progress_bar,
            log_output=log_output,
            autosave_cell_every=autosave_cell_every,
        )
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


def register() -> str:
    """Make the engine known to papermill (idempotent); return its name."""
    papermill_engines.register(ENGINE, SparseSavesEngine)
    return ENGINE
