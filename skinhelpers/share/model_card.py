"""``MODEL_CARD.md`` of a run folder: what the model is, what it is for, how well it does.

``write_model_card(run_dir)`` reads the run's artifacts (``metrics.json``, ``split.json``,
``manifest.json``, ``params/*.json``, ``train_result.json``, and ``subgroups.csv`` /
``external_*_metrics.json`` when present) and writes ``<run_dir>/MODEL_CARD.md``
atomically: model and training, intended use and what it is not for, data and split,
test metrics with confidence intervals, subgroup and external results, calibration, the
melanoma operating points, limits and the data licence. Sections whose artifact is
missing say so instead of failing, so a card can be written for an unfinished run.
This module builds the sections describing the model, its use, data, sources, limits,
licence and usage, and assembles the card; the sections reporting results come from
:mod:`skinhelpers.share.card_results`. ``render_report`` writes it with the report;
``python -m skinhelpers.share.model_card RUN_DIR`` writes it alone.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from skinhelpers.data.folder_options import grouping_sentences, grouping_unit
from skinhelpers.explore.skin_tone import ITA_NOTE
from skinhelpers.files import atomic_path
from skinhelpers.share.card_results import (
    _appendix_section,
    _calibration_section,
    _ci,
    _confirmed_section,
    _external_section,
    _guard_section,
    _lesion_section,
    _levers_section,
    _metrics_section,
    _operating_points_section,
    _published_section,
    _read,
    _subgroup_section,
    md_table,
)
from skinhelpers.share.licences import CODE_LICENCE, data_licence

# run with `python -m` this module is "__main__": its spec keeps its name under skinhelpers
log = logging.getLogger(__spec__.name if __spec__ else __name__)

CARD_NAME = "MODEL_CARD.md"


def _size_text(p7: dict) -> str:
    """07's image size as the card shows it: "160 px, square" or "200x150 px (4:3)"."""
    w, h = p7.get("image_size"), p7.get("image_height") or 0
    if w is None:
        return "?"
    if not h or h == w:
        return f"{w} px, square"
    return f"{w}x{h} px (width x height), the images' own aspect"


# ------------------------------------------------------------------------------- sections


def _model_section(run_dir: Path, metrics: dict, params: dict) -> str:
    primary = metrics.get("primary")
    entry = (metrics.get("models") or {}).get(primary, {})
    train = _read(run_dir / "train_result.json") or {}
    prep = _read(run_dir / "preprocessing.json") or {}
    p7 = params.get("07_final_retrain", {})
    rows = [
        ["architecture", entry.get("arch") or train.get("arch", "?")],
        ["checkpoint", f"`checkpoints/{primary}.pt`" if primary else "–"],
        ["epoch", entry.get("epoch", "–")],
        ["parameters", f"{train['params'] / 1e6:.2f} M" if train.get("params") else "–"],
        [
            "initial weights",
            train.get("pretrained_source") or ("ImageNet" if train.get("pretrained") else "random"),
        ],
        ["image size", _size_text(p7)],
        [
            "preprocessing",
            f"`{prep.get('preprocess', '?')}`, resize `{prep.get('resize_mode', '?')}`",
        ],
        ["test-time augmentation", ", ".join(metrics.get("tta_views") or ["identity"])],
        ["evaluated in", metrics.get("precision", "float32")],
    ]
    sel = metrics.get("selection") or {}
    if sel:
        rows.insert(2, ["checkpoint fixed by", _selection_text(sel)])
    for k in (
        "epochs",
        "lr",
        "loss",
        "label_smoothing",
        "balance_power",
        "logit_adjust_tau",
        "ema",
        "monitor",
    ):
        if k in p7:
            rows.append([f"training: {k}", p7[k]])
    rows.append(["probabilities (predict, export, demo)", probabilities_text(metrics)])
    return "## Model\n\n" + md_table(["", ""], rows)


def _selection_text(sel: dict) -> str:
    if sel.get("rule") == "validation":
        return (
            f"validation: the highest validation {sel.get('metric', 'balanced_accuracy')} "
            "("
            + ", ".join(f"{n} {v:.3f}" for n, v in (sel.get("validation") or {}).items())
            + "), before test was scored"
        )
    return "the `checkpoint` parameter, before test was scored"


def probabilities_text(metrics: dict) -> str:
    """Which class mix the probabilities a user gets are under (metrics.json's
    ``probabilities``, written by notebook 08)."""
    rec = metrics.get("probabilities")
    if not isinstance(rec, dict):
        return (
            "softmax of the logits (this run was evaluated before the probabilities were "
            "moved to the training data's class mix: under a logit-adjusted loss they are "
            "equal-prior probabilities)"
        )
    return rec.get("description", "?")


def _use_section(synthetic: bool) -> str:
    s = (
        "## Intended use\n\n"
        "Research and teaching: studying how a classifier of dermoscopy images behaves, "
        "comparing training choices, and showing what such a model can and cannot do.\n\n"
        "**Not for:** diagnosis, triage or any decision about a patient. This model is "
        "**not a medical device** and has not been validated prospectively, on other "
        "populations, cameras or clinics, or against dermatologists. It sees one "
        "dermoscopic image, without history, palpation or the patient's other lesions. "
        "Clinical photographs (non-dermoscopic), other body sites or skin types absent "
        "from the training data are out of scope."
    )
    if synthetic:
        s += (
            "\n\n**This run used SYNTHETIC images**: its numbers show the pipeline "
            "working and mean nothing medically."
        )
    return s


def _data_section(run_dir: Path, manifest: dict, split: dict | None) -> str:
    out = ["## Data and split"]
    n_images = None
    if (run_dir / "manifest.csv").exists():
        n_images = len(pd.read_csv(run_dir / "manifest.csv", usecols=[0]))
    rows = [
        ["dataset", manifest.get("dataset", "?")],
        ["images used", n_images if n_images is not None else "?"],
        ["classes", ", ".join(map(str, manifest.get("classes") or []))],
        ["positive (malignant) class", manifest.get("positive_class") or "–"],
        ["split grouped by", grouping_unit(manifest)],
    ]
    meta = manifest.get("metadata") or {}
    if meta:
        rows.append(
            [
                "metadata CSV",
                f"{', '.join(meta.get('columns', []))} for {meta.get('images_matched')} images "
                f"({meta.get('patients')} patients, {meta.get('lesions')} lesions)",
            ]
        )
    val = manifest.get("validation") or {}
    if val.get("dropped"):
        rows.append(
            ["dropped by validation", ", ".join(f"{k}: {v}" for k, v in val["dropped"].items())]
        )
    sub = manifest.get("subsample") or {}
    if sub:
        rows.append(
            [
                "subsample",
                f"{sub.get('rows_after')} of {sub.get('rows_before')} "
                f"images (seed {sub.get('seed')})",
            ]
        )
    out.append(md_table(["", ""], rows))
    if not split:
        out.append("No `split.json` in this run folder.")
        return "\n\n".join(out)
    out.append(
        " ".join(grouping_sentences(manifest))
        + f" Split seed {split.get('seed')}; test: {split.get('test_method', '?')}."
    )
    sizes, counts = split.get("sizes") or {}, split.get("class_counts") or {}
    parts = [p for p in ("train", "val", "test") if p in sizes]
    classes = list(manifest.get("classes") or next(iter(counts.values()), {}).keys())
    rows = [
        ["images"] + [sizes[p].get("images", "–") for p in parts],
        ["lesions (groups)"] + [sizes[p].get("groups", "–") for p in parts],
    ]
    rows += [[c] + [counts.get(p, {}).get(c, 0) for p in parts] for c in classes]
    out.append(md_table([""] + parts, rows))
    return "\n\n".join(out)


def _limits_section(metrics: dict, manifest: dict, synthetic: bool, ita: bool = False) -> str:
    lim = []
    if synthetic:
        lim.append("Trained and tested on synthetic images: no medical meaning at all.")
    if manifest.get("dataset") == "ham10000":
        lim.append(
            "HAM10000 comes from two sites (Vienna, Austria, and Queensland, "
            "Australia), mostly light skin; performance on darker skin and other "
            "devices is unknown."
        )
        lim.append(
            "Labels: over half are histopathology-confirmed, the rest expert "
            "consensus, follow-up or confocal microscopy; nevi dominate (about 67%)."
        )
    n = metrics.get("n_test")
    if isinstance(n, int) and n < 1000:
        lim.append(f"The test split is small (n = {n}): see the width of the intervals.")
    for op in (metrics.get("positive_class") or {}).get("operating_points") or []:
        got = (op.get("test") or {}).get(op["target"])
        if isinstance(got, (int, float)) and got < op["target_value"] - 0.02:
            lim.append(
                f"The threshold chosen for {op['target']} ≥ {op['target_value']:.0%} "
                f"reaches {got:.1%} on test: thresholds estimated on a validation "
                "set of this size do not transfer exactly."
            )
            break
    if ita:
        lim.append(
            "Skin tone: " + ITA_NOTE + " The subgroups table scores each ITA band "
            "(`ita_band`); the darkest bands hold few images or none."
        )
    t = (metrics.get("calibration") or {}).get("temperature")
    if isinstance(t, (int, float)) and not 0.5 < t < 2:
        lim.append(
            f"Calibration temperature {t:.2f}: the probabilities are "
            f"{'over' if t > 1 else 'under'}-confident; read them as scores."
        )
    lim += [
        "Single images at low resolution; no clinical context.",
        "Grad-CAM maps show where the network looked, not why; they are no proof "
        "that it uses the lesion.",
    ]
    g = metrics.get("gradcam_in_lesion") or {}
    if isinstance(g.get("cam_inside_mean"), (int, float)):
        lim.append(
            f"On the test split {g['cam_inside_mean']:.0%} of the Grad-CAM attention "
            f"fell on the lesion, which covers {g.get('lesion_area_mean', 0):.0%} of "
            "the image."
        )
    return "## Limits\n\n" + "\n".join(f"- {x}" for x in lim)


def _has_ita(run_dir: Path) -> bool:
    """Whether the run's subgroups include the skin-tone bands (notebook 01's ITA)."""
    path = run_dir / "subgroups.csv"
    if not path.exists():
        return False
    t = pd.read_csv(path)
    return "attribute" in t and (t["attribute"] == "ita_band").any()


def _licence_section(dataset: str) -> str:
    return (
        "## Licence and citation\n\n"
        f"- **Data:** {data_licence(dataset)}\n"
        f"- **Code:** {CODE_LICENCE}. Weights trained on the data above carry the data's "
        "terms, whatever the code's licence.\n"
        "- Cite the suite and the dataset(s): see `CITATION.cff` in the repository."
    )


def _usage_section(primary: str | None, run_dir: Path, members=None) -> str:
    ck = f"checkpoints/{primary or 'best_ema'}.pt"
    out = (
        "## Use it\n\n"
        "```bash\n"
        f"python -m skinhelpers predict --checkpoint {ck} --images my_images/ "
        "--out preds.csv\n"
        f"python -m skinhelpers export --checkpoint {ck} --format onnx --out exported/\n"
        f"python -m skinhelpers demo --checkpoint {ck}   # http://127.0.0.1:7860\n"
        "```"
    )
    if members:
        rel = []
        for m in members:
            try:
                rel.append(str(Path(m).resolve().relative_to(run_dir.resolve())))
            except ValueError:
                rel.append(str(m))
        out += (
            f"\n\nThe K-fold ensemble ({len(rel)} models, the `ensemble` row above) predicts "
            "and exports the same way, its checkpoints given together (the demo page serves "
            "one checkpoint):\n\n```bash\n"
            f"python -m skinhelpers predict --checkpoint {' '.join(rel)} --images my_images/ "
            "--out preds.csv\n"
            f"python -m skinhelpers export --checkpoint {' '.join(rel)} --format onnx "
            "--out exported-ensemble/\n```"
        )
    return out


def _sources_section(manifest: dict, metrics: dict, split: dict | None) -> str | None:
    """The sources a run joined (chapter 01) and the model's result on each (chapter 08)."""
    srcs = manifest.get("sources")
    if not srcs:
        return None
    out = [
        "## Sources",
        f"Trained on {len(srcs)} datasets joined into one label space "
        f"(`label_space={manifest.get('label_space', 'first')}`); images present in two "
        f"sources were found by content and kept once "
        f"({(manifest.get('copies') or {}).get('pairs', 0)} copies).",
    ]
    rows = [
        [
            s["name"],
            s.get("images", "?"),
            ", ".join(s.get("labels_kept") or []),
            ", ".join(f"{k}: {v}" for k, v in (s.get("dropped_by_class") or {}).items()) or "–",
        ]
        for s in srcs
    ]
    out.append(md_table(["source", "images loaded", "classes", "dropped (no class)"], rows))
    held = (split or {}).get("holdout_source")
    if held:
        out.append(
            f"**Leave-one-source-out:** the test split is all of `{held}`, a source the "
            "model never saw in training or validation."
        )
    res = metrics.get("sources") or {}
    if res:
        rows = []
        for name, r in res.items():
            ops = r.get("operating_points") or []
            rows.append(
                [
                    name,
                    r.get("n_images"),
                    ", ".join(r.get("classes_averaged") or []) or "–",
                    _ci(r["balanced_accuracy"]) if "balanced_accuracy" in r else "–",
                    _ci(r["melanoma_auc"]) if "melanoma_auc" in r else "–",
                    "; ".join(
                        f"{op['name']}: sens {_ci(op['sensitivity'])}, spec "
                        f"{_ci(op['specificity'])}"
                        for op in ops
                    )
                    or "–",
                ]
            )
        out.append(
            "Test results per source (balanced accuracy over the classes a source holds 20+ "
            "test images of; lesion bootstrap and Wilson intervals):"
        )
        out.append(
            md_table(
                [
                    "source",
                    "test images",
                    "classes averaged",
                    "balanced accuracy",
                    "melanoma AUC",
                    "operating points",
                ],
                rows,
            )
        )
    return "\n\n".join(out)


def model_card_text(run_dir: str | os.PathLike) -> str:
    """The Markdown of the model card of ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    metrics = _read(run_dir / "metrics.json") or {}
    manifest = _read(run_dir / "manifest.json") or {}
    split = _read(run_dir / "split.json")
    params = {
        p.stem: (_read(p) or {}).get("params", {})
        for p in sorted((run_dir / "params").glob("*.json"))
    }
    dataset = manifest.get("dataset") or metrics.get("dataset") or "?"
    synthetic = bool(manifest.get("synthetic") or metrics.get("synthetic")) or dataset == "demo"
    parts = [
        f"# Model card: `{run_dir.name}`",
        f"_Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by skinlesion-lab "
        "from the run folder's artifacts._",
    ]
    if synthetic:
        parts.append("> **SYNTHETIC DATA.** Nothing here is a medical result.")
    parts.append("> **Not a diagnostic device.** For research and teaching only.")
    if metrics:
        parts.append(_model_section(run_dir, metrics, params))
    parts.append(_use_section(synthetic))
    parts.append(_data_section(run_dir, manifest, split))
    parts += [s for s in (_sources_section(manifest, metrics, split),) if s]
    if metrics:
        parts += [
            _metrics_section(metrics),
            _operating_points_section(metrics),
            _calibration_section(metrics),
        ]
        parts += [
            s
            for s in (
                _levers_section(metrics),
                _guard_section(metrics),
                _lesion_section(metrics),
                _confirmed_section(metrics),
                _published_section(metrics),
            )
            if s
        ]
    else:
        parts.append(
            "## Results\n\nNo `metrics.json` yet (notebook 08 writes it): no test "
            "metrics, operating points or calibration."
        )
    parts += [s for s in (_subgroup_section(run_dir), _external_section(run_dir)) if s]
    parts += [
        _limits_section(metrics, manifest, synthetic, _has_ita(run_dir)),
        _licence_section(dataset),
        _usage_section(
            metrics.get("primary"), run_dir, (metrics.get("ensemble") or {}).get("members")
        ),
    ]
    parts += [s for s in (_appendix_section(metrics),) if s]
    parts.append(
        "_The terms used here (balanced accuracy, bootstrap, Wilson interval, logit "
        "adjustment, ...) are explained in the report's glossary, `report/glossary.html`._"
    )
    return "\n\n".join(parts) + "\n"


def write_model_card(run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/MODEL_CARD.md`` atomically; return its path."""
    path = Path(run_dir) / CARD_NAME
    text = model_card_text(run_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m skinhelpers.share.model_card RUN_DIR
    if len(sys.argv) != 2:
        sys.exit("usage: python -m skinhelpers.share.model_card RUN_DIR")
    print(write_model_card(sys.argv[1]))


__all__ = [
    "CARD_NAME",
    "probabilities_text",
    "model_card_text",
    "write_model_card",
]
