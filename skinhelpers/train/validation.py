"""Validation during training: the validation metrics of every epoch and the trainer's
prediction loop.

:class:`ValidationMixin` gives :class:`~skinhelpers.train.trainer.Trainer` one validation
pass an epoch that scores the raw and the EMA weights together (``val_passes=1``), over
validation batches read once and then kept (on the device when they fit), gathered from
every rank under DDP, and :meth:`~ValidationMixin.predict`, the logits of any loader
through :func:`skinhelpers.model.inference.predict_loader`.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from skinhelpers.model.inference import predict_loader
from skinhelpers.model.metrics import val_metrics
from skinhelpers.train import distributed as ddp
from skinhelpers.train.batch_augment import fits_on_device

log = logging.getLogger(__name__)

#: validation images kept in host memory after the first pass (bytes; on a GPU: a quarter
#: of its free memory)
VAL_KEEP_BYTES = 2 * 1024**3


class ValidationMixin:
    """The validation methods of :class:`~skinhelpers.train.trainer.Trainer`.

    They use the trainer's ``cfg``, ``model``, ``ema``, ``val_loader``, ``dev``, ``dist``,
    ``num_classes``, ``pos_index``, ``memory_format``, ``use_amp``, ``amp_dtype``,
    ``_to_input`` and ``_autocast``, and keep ``_val_kept`` and ``val_passes_run``.
    """

    def _val_batches(self):
        """The validation batches: from ``val_loader`` the first time, then kept (on the
        device when they fit in a quarter of its free memory, else in host memory up to
        ``VAL_KEEP_BYTES``) for the next epochs: the images are fixed, reading and
        converting them every epoch is work done twice."""
        if self._val_kept is not None:
            yield from self._val_kept
            return
        kept: list | None = []
        on_device = False
        for i, (x, y) in enumerate(self.val_loader):
            if i == 0:
                nbytes = len(self.val_loader.dataset) * x[0].numel() * x.element_size()
                on_device = self.dev.type == "cuda" and fits_on_device(nbytes, self.dev, 0.25)
                if not on_device and nbytes > VAL_KEEP_BYTES:
                    kept = None
            if on_device:
                x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
            if kept is not None:
                kept.append((x, y))
            yield x, y
        self._val_kept = kept

    def _validation_pass(self, models: dict) -> dict:
        """``{prefix: (logits, labels)}``: one pass over the validation images, each batch
        through every model of ``models`` (``{prefix: model}``), gathered from every rank
        under DDP. The numbers are those of :meth:`predict` (same batches, same input
        function, same precision); the logits leave the device once, at the end."""
        self.val_passes_run += 1
        for m in models.values():
            m.eval()
        logits: dict[str, list] = {k: [] for k in models}
        labels = []
        with torch.inference_mode():
            for x, y in self._val_batches():
                x = self._to_input(x)
                for k, m in models.items():
                    with self._autocast():
                        logits[k].append(m(x).float())
                labels.append(y)
        y = torch.cat(labels).long().cpu() if labels else torch.empty(0, dtype=torch.long)
        y = ddp.all_gather_cat(y, self.dist)
        out = {}
        for k, parts in logits.items():
            lg = torch.cat(parts).cpu() if parts else torch.empty(0, self.num_classes)
            out[k] = (ddp.all_gather_cat(lg, self.dist), y)
        return out

    def validate(self) -> dict:
        """Validation metrics of the raw weights (``val_*``) and of the EMA weights
        (``ema_val_*``): one pass over the validation images for both (``val_passes=1``),
        or one pass each (``val_passes=2``)."""
        models = {"val_": self.model}
        if self.ema is not None:
            models["ema_val_"] = self.ema.module
        groups = [models] if self.cfg.val_passes == 1 else [{k: m} for k, m in models.items()]
        row = {}
        for group in groups:
            for prefix, (logits, y) in self._validation_pass(group).items():
                metrics = val_metrics(logits, y, self.pos_index)
                row.update({f"{prefix}{k}": v for k, v in metrics.items()})
        return row

    def predict(
        self, model: torch.nn.Module, loader: DataLoader
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (float32) and labels over ``loader`` through the one prediction loop
        (:func:`skinhelpers.model.inference.predict_loader`), gathered from every rank under
        DDP."""
        pred = predict_loader(
            model,
            loader,
            self.model.mean,
            self.model.std,
            desc=None,
            memory_format=self.memory_format,
            amp_dtype=self.amp_dtype if self.use_amp else None,
        )
        logits = torch.from_numpy(pred.logits).float().reshape(-1, self.num_classes)
        y = (
            torch.from_numpy(pred.labels)
            if pred.labels is not None
            else torch.empty(0, dtype=torch.long)
        )
        return ddp.all_gather_cat(logits, self.dist), ddp.all_gather_cat(y.long(), self.dist)


__all__ = ["VAL_KEEP_BYTES", "ValidationMixin"]
