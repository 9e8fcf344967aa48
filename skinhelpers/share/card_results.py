"""The results sections of a run's ``MODEL_CARD.md``, and the small helpers the card shares.

Each section builder reads ``metrics.json`` (or, for subgroups and external test sets,
``subgroups.csv`` / ``external_*_metrics.json`` in the run folder) and returns Markdown, or
``None`` when there is nothing to report: test metrics with confidence intervals, the
melanoma operating points, calibration, per-lesion, histopathology-confirmed and published
comparisons, the levers chosen on validation, the out-of-distribution guard, subgroups,
external test sets and the appendix of the checkpoints not reported.
:mod:`skinhelpers.share.model_card` assembles them with the sections describing the model;
``md_table``, ``_read`` and ``_ci`` serve both modules.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(v, pct: bool = False) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "–"
    return f"{100 * v:.1f}%" if pct else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _ci(v, pct: bool = False) -> str:
    """``0.812 (0.77–0.85)`` from a ``{"value", "ci_low", "ci_high"}`` dict or a number."""
    if isinstance(v, dict) and "value" in v:
        lo, hi = v.get("ci_low"), v.get("ci_high")
        ci = f" ({_num(lo, pct)}–{_num(hi, pct)})" if lo is not None and hi is not None else ""
        return _num(v["value"], pct) + ci
    return _num(v, pct)


def md_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""

    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(map(cell, header)) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _frame_table(df: pd.DataFrame, max_rows: int = 40) -> str:
    rows = [
        [_num(v) if isinstance(v, float) else v for v in r]
        for r in df.head(max_rows).itertuples(index=False)
    ]
    more = f"\n\n({len(df) - max_rows} more rows in the CSV.)" if len(df) > max_rows else ""
    return md_table(list(map(str, df.columns)), rows) + more


# ------------------------------------------------------------------------------- sections


def test_size_text(metrics: dict) -> str:
    """ "n = 1430 images of 1066 lesions" (the lesions when metrics.json has them)."""
    g = metrics.get("n_test_groups")
    return f"n = {metrics.get('n_test', '?')}" + (
        f" images of {g} lesions" if isinstance(g, int) else ""
    )


def bootstrap_text(metrics: dict) -> str:
    """What the headline intervals resampled, as metrics.json records it (the report's
    index says the same)."""
    n = metrics.get("n_bootstrap", "?")
    unit = metrics.get("bootstrap_unit")
    if unit == "group":
        return (
            f"{n} bootstrap resamples of the test lesions, stratified by class (images of "
            "one lesion are drawn together)"
        )
    if unit == "image":
        return (
            f"{n} bootstrap resamples of the test images, stratified by class (no lesion "
            "groups were given: where a lesion has several images, these intervals are "
            "too narrow)"
        )
    return (
        f"{n} stratified bootstrap resamples of the test images (image-level: this run "
        "was evaluated before the intervals resampled lesions, so they are too narrow "
        "where a lesion has several images)"
    )


def _reported(metrics: dict) -> dict:
    """The models the card reports: the primary checkpoint and a K-fold ensemble (fixed in
    advance); a run evaluated before the appendix existed shows all its checkpoints."""
    models = {k: v for k, v in (metrics.get("models") or {}).items() if isinstance(v, dict)}
    if "selection" not in metrics:
        return models
    return {k: v for k, v in models.items() if k in (metrics.get("primary"), "ensemble")}


def _metrics_section(metrics: dict) -> str:
    out = ["## Test metrics (95% bootstrap CI)"]
    models = _reported(metrics)
    keys: list[str] = []
    for m in models.values():
        keys += [k for k in m.get("headline", {}) if k not in keys]
    rows = [
        [f"{n}{' (reported)' if n == metrics.get('primary') else ''}"]
        + [_ci(m.get("headline", {}).get(k)) for k in keys]
        for n, m in models.items()
    ]
    out.append(md_table(["checkpoint"] + keys, rows))
    out.append(
        f"Held-out test split, {test_size_text(metrics)}; {bootstrap_text(metrics)}; "
        f"{len(metrics.get('tta_views') or [1])} test-time view(s)."
    )
    sel = metrics.get("selection") or {}
    if sel.get("sentence"):
        out.append(
            sel["sentence"].replace("**", "")
            + " The other checkpoints' test numbers are in the appendix, not for choosing."
        )
    pc = models.get(metrics.get("primary"), {}).get("per_class") or {}
    if pc:
        out.append("Per class (reported checkpoint):")
        out.append(
            md_table(
                ["class", "support", "recall (sensitivity)", "specificity", "precision", "ROC-AUC"],
                [
                    [
                        c,
                        v.get("support"),
                        _num(v.get("recall")),
                        _num(v.get("specificity")),
                        _num(v.get("precision")),
                        _num(v.get("roc_auc")),
                    ]
                    for c, v in pc.items()
                ],
            )
        )
    return "\n\n".join(out)


def _operating_points_section(metrics: dict) -> str:
    pos = metrics.get("positive_class")
    if not isinstance(pos, dict):
        return (
            "## Operating points\n\nThis dataset names no positive class (or notebook "
            "08 did not analyse it): no thresholds."
        )
    name = pos.get("class", "positive class")
    out = [
        f"## Operating points: {name} vs rest",
        f"ROC-AUC {_ci(pos.get('auc'))}, average precision "
        f"{_ci(pos.get('average_precision'))} on {pos.get('n_test_pos', '?')} {name} and "
        f"{pos.get('n_test_neg', '?')} other test images. Each threshold on "
        f"p({name}) was chosen on the validation split ({pos.get('n_val_pos', '?')} "
        f"{name}) and then applied, unchanged, to the test split.",
    ]
    rows = []
    for op in pos.get("operating_points") or []:
        v, t, ci = op.get("validation", {}), op.get("test", {}), op.get("test_ci", {})
        rows.append(
            [
                f"{op['target']} ≥ {op['target_value']:.0%}",
                f"{op['threshold']:.3f}",
                _num(v.get("sensitivity"), True),
                _num(v.get("specificity"), True),
                _ci(ci.get("sensitivity", t.get("sensitivity")), True),
                _ci(ci.get("specificity", t.get("specificity")), True),
                _num(t.get("ppv"), True),
                _num(t.get("npv"), True),
            ]
        )
    out.append(
        md_table(
            [
                "target",
                "threshold",
                "val sensitivity",
                "val specificity",
                "test sensitivity (95% CI)",
                "test specificity (95% CI)",
                "test PPV",
                "test NPV",
            ],
            rows,
        )
    )
    methods = {
        (op.get("test_ci") or {}).get(k, {}).get("ci_method")
        for op in pos.get("operating_points") or []
        for k in ("sensitivity", "specificity")
    }
    if methods and all(m and m.startswith("wilson") for m in methods):
        out.append(
            "Sensitivity and specificity carry Wilson score intervals"
            + (
                " that count lesions (the effective number of images, given how far a "
                "lesion's images agree)"
                if any("groups" in m for m in methods)
                else ""
            )
            + ": the same interval wherever the number appears (the subgroup table's "
            "`all` row included). The AUC's interval is a bootstrap"
            + (" of the lesions." if pos.get("bootstrap_unit") == "group" else ".")
        )
    out.append(
        "PPV and NPV depend on how common melanoma is; the test split's share is not a clinic's."
    )
    out.append(
        f"A threshold applies to the balanced score of {name} (the softmax of the logits, every "
        "class weighed equally: the score it was chosen on), not to the probabilities under the "
        "data's class mix; the export's `config.json` and the demo page carry every point (to "
        "screen, take the 95%-sensitivity one)."
    )
    mal = metrics.get("malignant")
    if isinstance(mal, dict) and mal.get("operating_points"):
        out.append(f"### {mal.get('class', 'malignant')} vs benign")
        out.append(
            f"ROC-AUC {_ci(mal.get('auc'))} on {mal.get('n_test_pos', '?')} malignant and "
            f"{mal.get('n_test_neg', '?')} benign test images; the score is the sum of the "
            f"balanced scores of {', '.join(mal.get('classes') or [])}, thresholds chosen on "
            "validation."
        )
        out.append(
            md_table(
                ["target", "threshold", "test sensitivity (95% CI)", "test specificity (95% CI)"],
                [
                    [
                        f"{op['target']} ≥ {op['target_value']:.0%}",
                        f"{op['threshold']:.3f}",
                        _ci((op.get("test_ci") or {}).get("sensitivity"), True),
                        _ci((op.get("test_ci") or {}).get("specificity"), True),
                    ]
                    for op in mal["operating_points"]
                ],
            )
        )
    elif metrics.get("malignant_note"):
        out.append(f"Malignant vs benign: {metrics['malignant_note']}")
    return "\n\n".join(out)


def _calibration_section(metrics: dict) -> str:
    cal = metrics.get("calibration")
    if not isinstance(cal, dict):
        return "## Calibration\n\nNot measured in this run."
    b, a = cal.get("before", {}), cal.get("after", {})
    return (
        "## Calibration\n\n"
        + md_table(
            ["", "ECE", "NLL", "Brier"],
            [
                [
                    "as given" if isinstance(cal.get("probabilities"), dict) else "as trained",
                    _num(b.get("ece")),
                    _num(b.get("nll")),
                    _num(b.get("brier")),
                ],
                [
                    f"temperature T = {_num(cal.get('temperature'))}",
                    _num(a.get("ece")),
                    _num(a.get("nll")),
                    _num(a.get("brier")),
                ],
            ],
        )
        + f"\n\nTest split, {cal.get('n_bins', '?')} bins; T fitted on validation. "
        + (
            f"Measured on the probabilities a user gets: {cal['probabilities']['description']} "
            f"(the balanced scores read as probabilities: ECE "
            f"{_num(cal.get('balanced_scores_ece'))}). "
            if isinstance(cal.get("probabilities"), dict)
            else "Measured on the softmax of the logits (equal-prior probabilities under a "
            "logit-adjusted loss). "
        )
        + "The probabilities `predict`, the export and the demo give are *before* "
        "temperature scaling."
    )


def _lesion_section(metrics: dict) -> str | None:
    les = metrics.get("per_lesion")
    res = (metrics.get("models") or {}).get(metrics.get("primary")) or {}
    if not isinstance(les, dict) or not res:
        return None
    rows = [
        [k, _ci(res.get("headline", {}).get(k)), _ci(v)]
        for k, v in (les.get("result") or {}).get("headline", {}).items()
    ]
    if "auc" in les:
        rows.append(
            ["melanoma AUC", _ci((metrics.get("positive_class") or {}).get("auc")), _ci(les["auc"])]
        )
    return (
        "## Per lesion\n\n"
        f"Each lesion's test images averaged (their probabilities) and scored once: "
        f"{les.get('n_lesions')} lesions of {les.get('n_images')} images; intervals resample "
        "lesions.\n\n" + md_table(["metric", "per image (95% CI)", "per lesion (95% CI)"], rows)
    )


def _confirmed_section(metrics: dict) -> str | None:
    c = metrics.get("confirmed")
    if not isinstance(c, dict):
        return None
    out = [
        "## Histopathology-confirmed test cases",
        f"{c.get('n_images')} of {c.get('n_test')} test images have a biopsy-confirmed "
        'diagnosis (`dx_type == "histo"`).',
    ]
    r = c.get("result")
    if isinstance(r, dict):
        out.append(
            md_table(
                ["metric", "confirmed cases (95% CI)"],
                [[k, _ci(v)] for k, v in r.get("headline", {}).items()]
                + ([["melanoma AUC", _ci(c["auc"])]] if "auc" in c else []),
            )
        )
    else:
        out.append(f"No metrics: {c.get('why_none', 'too few')}.")
    out.append(c.get("note", ""))
    return "\n\n".join(x for x in out if x)


def _published_section(metrics: dict) -> str | None:
    pub = metrics.get("published")
    if not isinstance(pub, dict):
        return None
    ours = pub.get("ours") or {}
    rows = [[r["result"], _num(r["balanced_accuracy"]), r["setting"]] for r in pub["published"]]
    rows.append([f"this run ({metrics.get('primary')})", _ci(ours), "lesion bootstrap 95% CI"])
    return (
        "## Beside published results\n\n"
        + md_table(["result", "balanced accuracy", "setting"], rows)
        + "\n\nNot directly comparable:\n\n"
        + "\n".join(f"- {w}" for w in pub.get("reasons") or [])
        + f"\n\nSources: {pub.get('source', '')}."
    )


def _appendix_section(metrics: dict) -> str | None:
    if "selection" not in metrics:
        return None
    models = {k: v for k, v in (metrics.get("models") or {}).items() if isinstance(v, dict)}
    others = {k: v for k, v in models.items() if k not in _reported(metrics)}
    if not others:
        return None
    keys: list[str] = []
    for m in others.values():
        keys += [k for k in m.get("headline", {}) if k not in keys]
    rows = [[n] + [_ci(m.get("headline", {}).get(k)) for k in keys] for n, m in others.items()]
    note = (metrics.get("not_for_choosing") or {}).get("note") or metrics["selection"].get(
        "not_for_choosing", ""
    )
    return (
        "## Appendix: the other checkpoints on test, not for choosing\n\n"
        + note
        + "\n\n"
        + md_table(["checkpoint"] + keys, rows)
    )


def _levers_section(metrics: dict) -> str | None:
    lev = metrics.get("levers")
    if not isinstance(lev, dict) or not lev.get("test"):
        return None
    rows = [
        [
            r["step"],
            r["against"],
            _num(r["after"]),
            f"{r['diff']:+.3f} ({r['ci_low']:+.3f} to {r['ci_high']:+.3f})",
        ]
        for r in lev["test"]
        if r.get("metric") == "balanced_accuracy"
    ]
    cols = lev.get("metadata_columns") or []
    return (
        "## Levers chosen on validation\n\n"
        + md_table(["step", "against", "test balanced accuracy", "paired change (95% CI)"], rows)
        + f"\n\nChosen on the validation split: `{lev.get('chosen')}`. "
        + (f"The metadata model uses {', '.join(cols)} (never `dx_type`). " if cols else "")
        + "The exported model and `predict` serve the image model alone, without these."
    )


def _sub_cell(r) -> str:
    """One subgroup number: "0.712 (0.61–0.80)", "0.333 (no interval)" or "not reported";
    a † marks a number shown but not ranked (below a minimum)."""
    v, lo, hi = r.get("value"), r.get("ci_low"), r.get("ci_high")
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "not reported"
    ok = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (lo, hi))
    text = f"{v:.3f} ({lo:.3f}–{hi:.3f})" if ok else f"{v:.3f} (no interval)"
    unranked = r.get("attribute") != "all" and "ranked" in r and not bool(r["ranked"])
    return text + (" †" if unranked else "")


def _guard_section(metrics: dict) -> str | None:
    g = metrics.get("ood")
    if not g:
        return None
    m = g.get("measured") or {}
    au = m.get("auroc_vs_far_ood") or {}
    lines = [
        "## Out-of-distribution guard",
        "",
        f"The reported checkpoint carries a guard: the **{g['method']}** score of the "
        "network's own features (higher: further from the training images), with the "
        f"threshold {g['threshold']:.4g} that {g['pass_rate']:.0%} of the validation images "
        "pass. `predict` writes `ood_score` and `in_distribution`, the ONNX export outputs "
        "`ood_score`, and the demo page gives no verdict for an image above the threshold.",
        "",
    ]
    if au:
        lines.append(
            "- chosen on validation images against ordinary photos (AUROC): "
            + ", ".join(f"{k} {v:.3f}" for k, v in au.items())
        )
    if "auroc_far_ood_heldout" in m:
        lines.append(
            f"- measured on {m.get('n_far_ood_heldout', '?')} held-out photos and crops "
            f"({', '.join(m.get('measured_on') or [])}): AUROC "
            f"{m['auroc_far_ood_heldout']:.3f}, {m['far_ood_heldout_flagged']:.0%} flagged"
        )
    if "test_flagged" in g:
        lines.append(f"- test images flagged: {g['test_flagged']:.1%}")
    lines += [
        "",
        "Ordinary photos are far from dermoscopy; an image of a lesion from another clinic "
        "or camera is near. The `mahalanobis_layers` score reads the network's early stages "
        "too (colour, texture, sharpness) and flags most images of a source the model was "
        "not trained on; the penultimate features alone flag only part of them (see the "
        "external test sets). Passing the guard is no promise that the answer is right.",
    ]
    return "\n".join(lines)


def _subgroup_section(run_dir: Path) -> str | None:
    path = run_dir / "subgroups.csv"
    if not path.exists():
        return None
    t = pd.read_csv(path)
    if not {"attribute", "group", "metric", "value"} <= set(t.columns):  # another layout
        return (
            "## Subgroups\n\nTest metrics by patient subgroup (`subgroups.csv`); small "
            "groups have wide intervals.\n\n" + _frame_table(t)
        )
    metrics = list(dict.fromkeys(t["metric"]))
    counts = [c for c in ("n", "n_lesions", "n_pos", "n_neg") if c in t.columns]
    rows = []
    for (attr, group), g in t.groupby(["attribute", "group"], sort=False):
        first = g.iloc[0]
        cells = {r["metric"]: _sub_cell(r) for r in g.to_dict("records")}
        rows.append(
            [attr, "whole test set" if attr == "all" else group]
            + [str(int(first[c])) if pd.notna(first[c]) else "–" for c in counts]
            + [cells.get(m, "–") for m in metrics]
        )
    shown = rows[:40]
    more = f"\n\n({len(rows) - 40} more groups in `subgroups.csv`.)" if len(rows) > 40 else ""
    return (
        "## Subgroups\n\nTest metrics by patient subgroup (`subgroups.csv`), each with its "
        "number of images (`n`), lesions, melanomas (`n_pos`) and other images (`n_neg`). "
        "One 95% interval per number, the same as in the tables above: Wilson intervals "
        "counting lesions for sensitivity and specificity, a bootstrap of the lesions for "
        "balanced accuracy and the AUC. Small groups are shown as they are and never "
        "ranked: † marks a number below its minimum (too few images for an interval of "
        "balanced accuracy, too few melanomas or other images to rank); an AUC from too "
        "few of either is not reported; `note` in the CSV says why.\n\n"
        + md_table(["attribute", "group", *counts, *metrics], shown)
        + more
    )


def _external_section(run_dir: Path) -> str | None:
    files = sorted(run_dir.glob("external_*_metrics.json"))
    if not files:
        return None
    out = [
        "## External test sets",
        "The same model on data from another source, never seen in training or "
        "threshold choice: the honest estimate of how it travels.",
    ]
    for f in files:
        m = _read(f) or {}
        name = m.get("dataset") or f.stem[len("external_") : -len("_metrics")]
        head = m.get("headline") or {
            k: v
            for k, v in (m.get("metrics") or m).items()
            if isinstance(v, (int, float, dict))
            and not isinstance(v, bool)
            and (not isinstance(v, dict) or "value" in v)
        }
        lesions = (
            f" images of {m['n_groups']} lesions" if isinstance(m.get("n_groups"), int) else ""
        )
        out.append(f"**{name}** (`{f.name}`, n = {m.get('n', m.get('n_test', '?'))}{lesions})")
        out.append(md_table(["metric", "value (95% CI)"], [[k, _ci(v)] for k, v in head.items()]))
        out += [f"- {s}" for s in m.get("sentences") or []]
    return "\n\n".join(out)


__all__ = ["bootstrap_text", "md_table", "test_size_text"]
