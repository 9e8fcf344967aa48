"""Probabilities under a class mix: what the model's scores mean, and how to say them right.

Training uses a logit-adjusted loss (``TrainConfig.logit_adjust_tau``, Menon et al.,
arXiv 2007.07314): the loss sees ``logits + tau * log(pi_s)``, where ``pi_s`` is the class
prior of the training batches (:func:`skinhelpers.train.sampling.sampling_prior`). So the
softmax of the raw logits estimates class probabilities under **equal** class priors, and
its argmax is the *balanced* decision: every class weighed equally, the rule the model was
selected for (validation balanced accuracy). A reader who takes ``p(mel) = 0.6`` from it
for "60% of such lesions are melanomas" is wrong whenever melanoma is rarer than 1 in 7.

By Bayes' rule, probabilities under a class mix ``q`` are

    p_q(c | x)  ∝  softmax(logits)_c * pi_s[c] ** (tau - 1) * q[c]

(the model's probabilities under the batches' mix, ``softmax(logits + tau * log pi_s)``,
moved from ``pi_s`` to ``q``). When the batches had the data's own mix (``balance_power``
0) and ``q`` is that mix this is ``softmax(logits + tau * log(prior))``; with square-root
class-balanced sampling (``balance_power`` 0.5, the default) the batches' mix is *not* the
data's, and the formula above is the one that gives the data's. The choices of ``q``:

* ``"data"`` (the default of ``predict``, the export and the demo): the training split's
  class mix, the checkpoint's ``train_prior["data"]``;
* ``"equal"``: every class equally likely (the balanced scores themselves when ``tau = 1``);
* ``"balanced"``: the balanced scores exactly, the softmax of the raw logits, what notebook
  08's metrics and thresholds use (under the class mix ``pi_s ** (1 - tau)``: equal priors
  when ``tau = 1``);
* a prevalence the user knows, e.g. a clinic's melanoma rate ``"mel=0.02"``: the classes
  named get their rate, the others share the rest in the training data's proportions;
  or one number per class.

Only the probabilities change: the predicted class stays the balanced decision, the argmax
of the raw scores (:func:`balanced_decision`). Checkpoints written before they carried
``train_prior`` get equal priors, with a note saying so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from skinhelpers.model.checkpoints import CheckpointError, train_prior

#: the class mix ``predict``, the export and the demo give probabilities under by default
DEFAULT_PRIOR = "data"
EQUAL_NAMES = ("equal", "uniform")
#: the softmax of the raw logits, unchanged (what the metrics and thresholds of 08 use)
BALANCED = "balanced"
PRIOR_HELP = (
    "class mix of the probabilities: data (default: the training data's class mix), equal "
    "(every class equally likely), balanced (the softmax of the raw logits, the scores "
    "notebook 08's metrics and thresholds use), or a prevalence, e.g. mel=0.02 (the classes "
    "named get their rate, the others share the rest in the training data's proportions); the "
    "predicted class is the balanced decision whatever the choice"
)
NO_PRIOR_NOTE = (
    "this checkpoint carries no training prior (written before checkpoints recorded "
    "it): its probabilities are under equal class priors, whatever prior was asked for"
)

log = logging.getLogger(__name__)


def parse_prior(spec) -> str | dict[str, float] | list[float]:
    """A prior as given on a command line, a page or in Python, in one of three forms:
    ``"data"``, ``"equal"`` (also ``"uniform"``) or ``"balanced"``; ``{class: rate}`` (from
    ``"mel=0.02,bcc=0.01"``, rates also as ``"2%"``); or one number per class (from a list
    or ``"0.1,0.2,..."``). ValueError for anything else."""
    if spec is None:
        return DEFAULT_PRIOR
    if isinstance(spec, Mapping):
        return {str(k): _rate(v, k) for k, v in spec.items()}
    if isinstance(spec, (list, tuple, np.ndarray)):
        return [_rate(v, i) for i, v in enumerate(spec)]
    text = str(spec).strip()
    low = text.lower()
    if low in ("", DEFAULT_PRIOR):
        return DEFAULT_PRIOR
    if low in EQUAL_NAMES:
        return "equal"
    if low == BALANCED:
        return BALANCED
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all("=" in p for p in parts):
        out = {}
        for p in parts:
            k, v = p.split("=", 1)
            out[k.strip()] = _rate(v, k.strip())
        return out
    if parts and all(re.fullmatch(r"[0-9.eE+-]+%?", p) for p in parts):
        return [_rate(p, i) for i, p in enumerate(parts)]
    raise ValueError(
        f"prior {spec!r}: give 'data', 'equal', class rates such as 'mel=0.02' or one "
        "number per class"
    )


def _rate(v, name) -> float:
    s = str(v).strip()
    try:
        r = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise ValueError(f"prior of {name!r}: {v!r} is not a number") from None
    if not 0 <= r <= 1 or not np.isfinite(r):
        raise ValueError(f"prior of {name!r}: {r} is not a probability in [0, 1]")
    return r


@dataclass
class PriorShift:
    """How a model's balanced scores become probabilities under ``target``.

    ``weights`` (one per class) multiply the balanced probabilities before they are
    renormalised: ``pi_s ** (tau - 1) * target``; ``known`` is False for a checkpoint
    without its training prior (then everything is under equal priors and ``note`` says
    so)."""

    name: str
    classes: list[str]
    target: np.ndarray
    weights: np.ndarray
    tau: float | None
    known: bool
    note: str = ""
    data: np.ndarray | None = field(default=None, repr=False)

    def apply(self, balanced_probs) -> np.ndarray:
        """Probabilities (rows sum to one) under ``target`` from balanced probabilities
        (the softmax of the raw logits, averaged over test-time views or ensemble
        members)."""
        p = np.asarray(balanced_probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.weights):
            raise ValueError(
                f"probabilities of shape {p.shape} do not fit {len(self.weights)} classes"
            )
        q = p * self.weights
        s = q.sum(axis=1, keepdims=True)
        return np.divide(q, s, out=np.full_like(q, 1.0 / q.shape[1]), where=s > 0)

    @property
    def offsets(self) -> np.ndarray:
        """The same as logit offsets: ``softmax(logits + offsets)`` (one view, one model)."""
        return np.log(np.clip(self.weights, 1e-300, None))

    def describe(self) -> str:
        """What the probabilities are, in one sentence."""
        if not self.known:
            return f"probabilities under equal class priors ({NO_PRIOR_NOTE})"
        if self.name == "data":
            what = "the training data's class mix"
        elif self.name == "equal":
            what = "equal class priors"
        elif self.name == BALANCED:
            return (
                "the balanced scores (the softmax of the raw logits, unchanged: probabilities "
                f"under equal class priors when tau = 1; tau = {self.tau:g}); the predicted "
                "class is the balanced decision"
            )
        else:
            what = "the class mix given"
        mix = ", ".join(f"{c} {q:.1%}" for c, q in zip(self.classes, self.target))
        return (
            f"probabilities under {what} ({mix}; logit adjustment tau = {self.tau:g} undone); "
            "the predicted class is the balanced decision"
        )

    def record(self) -> dict:
        """JSON-ready: the prior's name, the class mix, tau, whether the checkpoint knew."""
        return {
            "prior": self.name,
            "target": {c: float(q) for c, q in zip(self.classes, self.target)},
            "logit_adjust_tau": self.tau,
            "known": self.known,
            "description": self.describe(),
            **({"note": self.note} if self.note else {}),
        }


def target_prior(spec, classes: Sequence[str], data_prior=None) -> tuple[str, np.ndarray]:
    """``(name, q)``: the class mix ``spec`` (see :func:`parse_prior`) asks for.
    ``data_prior`` is the training data's mix (None: unknown, equal shares instead)."""
    classes = [str(c) for c in classes]
    k = len(classes)
    base = np.full(k, 1.0 / k) if data_prior is None else np.asarray(data_prior, float)
    base = base / base.sum()
    spec = parse_prior(spec)
    if spec == DEFAULT_PRIOR:
        return "data", base
    if spec in ("equal", BALANCED):  # balanced: equal when nothing else is known
        return spec, np.full(k, 1.0 / k)
    if isinstance(spec, list):
        if len(spec) != k:
            raise ValueError(f"a prior of {len(spec)} numbers for {k} classes {classes}")
        q = np.asarray(spec, float)
        if not q.sum() > 0:
            raise ValueError("a prior of only zeros")
        return "custom", q / q.sum()
    unknown = [c for c in spec if c not in classes]
    if unknown:
        raise ValueError(f"prior for {unknown}: the model's classes are {classes}")
    fixed = np.array([c in spec for c in classes])
    total = sum(spec.values())
    if fixed.all():
        if abs(total - 1) > 1e-6:
            raise ValueError(f"the rates of all classes must sum to one, not {total:g}")
        return "custom", np.array([spec[c] for c in classes])
    if total >= 1:
        raise ValueError(f"the rates given ({total:g}) leave nothing for the other classes")
    q = np.where(fixed, 0.0, base)
    q = q / q.sum() * (1 - total) if q.sum() > 0 else np.where(fixed, 0.0, 1.0 / (~fixed).sum())
    for i, c in enumerate(classes):
        if fixed[i]:
            q[i] = spec[c]
    return "custom", q


def prior_shift(record: dict | None, classes: Sequence[str], spec=DEFAULT_PRIOR) -> PriorShift:
    """The :class:`PriorShift` of a model whose checkpoint (or export config) carries
    ``record`` (``train_prior``: ``tau``, ``sampling``, ``data``; None for a checkpoint
    without it) to the class mix ``spec``."""
    classes = [str(c) for c in classes]
    k = len(classes)
    if record is None:
        target_prior(spec, classes, None)  # still refuse a prior that cannot be
        return PriorShift(
            "equal",
            classes,
            np.full(k, 1.0 / k),
            np.ones(k),
            None,
            False,
            NO_PRIOR_NOTE,
        )
    tau = float(record["tau"])
    sampling = np.asarray(record["sampling"], float)
    data = np.asarray(record["data"], float)
    if len(sampling) != k or len(data) != k:
        raise CheckpointError(f"train_prior has {len(sampling)} classes, the model {k}")
    name, q = target_prior(spec, classes, data)
    if name == BALANCED:  # the raw scores: the mix they are probabilities under
        q = np.clip(sampling, 1e-12, None) ** (1.0 - tau)
        q = q / q.sum()
    w = np.clip(sampling, 1e-12, None) ** (tau - 1.0) * q
    note = ""
    if (q[sampling <= 0] > 0).any():
        note = "a class absent from the training batches keeps its balanced score"
    return PriorShift(name, classes, q, w / w.sum(), tau, True, note, data / data.sum())


def shift_for(info: dict, spec=DEFAULT_PRIOR) -> PriorShift:
    """:func:`prior_shift` for a checkpoint or export ``info`` dict (its ``train_prior``)."""
    return prior_shift(train_prior(info), info["classes"], spec)


def balanced_decision(balanced_probs) -> np.ndarray:
    """The predicted class: the argmax of the balanced scores (the raw logits), the rule the
    model was selected for, whatever class mix its probabilities are given under."""
    return np.asarray(balanced_probs).argmax(axis=1)


__all__ = [
    "BALANCED",
    "DEFAULT_PRIOR",
    "EQUAL_NAMES",
    "NO_PRIOR_NOTE",
    "PRIOR_HELP",
    "PriorShift",
    "balanced_decision",
    "parse_prior",
    "prior_shift",
    "shift_for",
    "target_prior",
]
