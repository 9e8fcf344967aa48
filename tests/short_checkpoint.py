"""Test scaffolding (not a test module): a short-trained checkpoint on real images.

``train_short_checkpoint`` trains a small network for a few steps with a plain torch loop
on images prepared exactly as the cache prepares them, and saves it with
:func:`skinhelpers.model.checkpoints.save_checkpoint`, so prediction, Grad-CAM and the
notebook can be tested on a real (if barely trained) model in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skinhelpers.data.imaging import load_for_model
from skinhelpers.model import checkpoints
from skinhelpers.model import factory as models
from skinhelpers.model.inference import to_model_input


def pick_images(df: pd.DataFrame, per_class: int = 8, seed: int = 0) -> pd.DataFrame:
    """``per_class`` images of every class (fewer where a class has fewer), seeded."""
    return (
        df.groupby("label", group_keys=False, sort=True)
        .apply(lambda g: g.sample(min(per_class, len(g)), random_state=seed))
        .reset_index(drop=True)
    )


def train_short_checkpoint(
    df: pd.DataFrame,
    out: Path,
    size: int = 32,
    steps: int = 12,
    arch: str = "small_cnn",
    preprocess: str = "none",
    resize_mode: str = "squash",
    seed: int = 0,
    epoch: int = 1,
    state_dict: dict | None = None,
    logit_adjust_tau: float | None = None,
) -> Path:
    """``logit_adjust_tau``: train with the logit-adjusted loss as the trainer does (the
    loss sees ``logits + tau * log(prior)``, the prior the class mix of ``df``) and save the
    ``train_prior`` record the trainer saves; None: plain cross-entropy, no record (a
    checkpoint written before checkpoints carried it)."""
    classes = list(df.attrs["classes"])
    torch.manual_seed(seed)
    kw = models.model_kwargs(len(classes), drop_rate=0.0)
    model = models.build_model(arch, **kw)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    x = (
        torch.from_numpy(
            np.stack([load_for_model(p, size, preprocess, resize_mode) for p in df["path"]])
        )
        .permute(0, 3, 1, 2)
        .contiguous()
    )
    y = torch.tensor(df["label_idx"].to_numpy().copy(), dtype=torch.long)
    xin = to_model_input(x, model.mean, model.std)
    prior = torch.bincount(y, minlength=len(classes)).float()
    prior = prior / prior.sum()
    shift = 0.0 if logit_adjust_tau is None else logit_adjust_tau * prior.clamp_min(1e-12).log()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (min(16, len(y)),), generator=g)
        loss = torch.nn.functional.cross_entropy(model(xin[idx]) + shift, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return checkpoints.save_checkpoint(
        out,
        model,
        arch=arch,
        model_kwargs=kw,
        classes=classes,
        image_size=size,
        preprocess=preprocess,
        resize_mode=resize_mode,
        mean=model.mean,
        std=model.std,
        dataset=df.attrs.get("dataset", "?"),
        epoch=epoch,
        metrics={"train_loss": loss.item()},
        extra=None
        if logit_adjust_tau is None
        else {
            "train_prior": {
                "tau": float(logit_adjust_tau),
                "sampling": prior.tolist(),  # plain random batches: the data's own mix
                "data": prior.tolist(),
            }
        },
    )
