"""How this run's balanced accuracy sits beside published results on the same metric,
and why the numbers are not directly comparable (notebook 08, the model card).

The reference is the ISIC 2018 challenge, Task 3 (lesion diagnosis): HAM10000 was its
training set, its seven classes are HAM10000's, and it ranked by balanced multiclass
accuracy, the mean recall over the seven classes, the metric this suite reports first.
"""

from __future__ import annotations

import logging

import pandas as pd

#: HAM10000's seven classes, the label space of ISIC 2018 Task 3
ISIC2018_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

_TOP = "ensembles at full resolution, with images beyond HAM10000 (some non-public)"
#: published ISIC 2018 Task 3 results (balanced multiclass accuracy on its test set)
PUBLISHED = (
    {
        "result": "ISIC 2018 Task 3, 1st place",
        "balanced_accuracy": 0.885,
        "setting": _TOP,
    },
    {
        "result": "ISIC 2018 Task 3, 2nd place",
        "balanced_accuracy": 0.882,
        "setting": _TOP,
    },
    {
        "result": "ISIC 2018 Task 3, 3rd place",
        "balanced_accuracy": 0.871,
        "setting": _TOP,
    },
    {
        "result": "best public-data-only team (Gessert et al., arXiv 1808.01694)",
        "balanced_accuracy": 0.856,
        "setting": "DenseNet/SENet/ResNeXt ensemble, loss weighting or balanced sampling, "
        "many crops of the full 600x450 image, a meta-learner",
    },
)
SOURCE = (
    "ISIC 2018 Task 3 leaderboard (1,512 test images); Gessert et al., 'Skin Lesion "
    "Diagnosis using Ensembles, Unscaled Multi-Crop Evaluation and Loss Weighting', "
    "arXiv 1808.01694"
)

log = logging.getLogger(__name__)


def comparable_dataset(classes) -> bool:
    """True when the run's classes are ISIC 2018 Task 3's seven."""
    return sorted(map(str, classes)) == sorted(ISIC2018_CLASSES)


def reasons(image_size: str, n_test: int, ensemble: bool = False) -> list[str]:
    """Why the run's number and the published ones are not directly comparable."""
    return [
        f"Resolution: this model saw {image_size} images (HAM10000 here is 200x150); the "
        "published models used the full 600x450 images, and many unscaled crops of them "
        "were a large part of the best public-data-only entry's gain.",
        f"Test set: this run's test split ({n_test} images, lesion-grouped, from HAM10000 "
        "itself) is not the challenge's 1,512 held-out images, which came partly from "
        "other sources; the two sets differ in difficulty and class mix.",
        "Models: the top entries are ensembles of several large networks with test-time "
        "crops and a meta-learner"
        + (
            "; this run's K-fold ensemble is five small ones."
            if ensemble
            else "; this run reports a single small network."
        ),
        "Data: the top three used images beyond HAM10000 (some non-public) and all of "
        "HAM10000 for training; this run trains on part of HAM10000 only (its train split).",
        "Budget: each published number is a team's best submission after much tuning; this "
        "run is one training with a fixed budget.",
    ]


def comparison_table(ours: dict | None, label: str = "this run") -> pd.DataFrame:
    """Published results and this run's balanced accuracy (``ours``: ``{"value", "ci_low",
    "ci_high"}``) in one table, highest first."""
    rows = [dict(r) for r in PUBLISHED]
    if ours is not None:
        rows.append(
            {
                "result": label,
                "balanced_accuracy": float(ours["value"]),
                "setting": f"95% CI {ours['ci_low']:.3f}-{ours['ci_high']:.3f} (lesion "
                "bootstrap); see the reasons below",
            }
        )
    t = pd.DataFrame(rows).sort_values("balanced_accuracy", ascending=False, kind="stable")
    return t.set_index("result")


__all__ = [
    "ISIC2018_CLASSES",
    "PUBLISHED",
    "SOURCE",
    "comparable_dataset",
    "comparison_table",
    "reasons",
]
