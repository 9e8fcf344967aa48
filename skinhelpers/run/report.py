"""The rendered report of a run: every executed notebook as HTML, and an index page.

``render_report(run_dir)`` writes ``<run_dir>/report/``:

* ``NN_name.html``: the executed notebook with its code,
* ``NN_name.story.html``: the same without code cells (narrative, tables, figures) and
  without progress bars,
* ``index.html``: the notebooks in order with both links, their run times, the headline
  metrics from ``metrics.json`` (with confidence intervals), the dataset (a SYNTHETIC
  banner for the demo set), what to do next, the other checkpoints' test numbers in an
  appendix (not for choosing) and the run's parameters (``run.json``, ``params/*.json``),
* ``model_card.html``: the run's ``MODEL_CARD.md`` (written here too, by
  :func:`skinhelpers.share.model_card.write_model_card`), linked from the index.

Everything is self-contained (figures are embedded in the notebooks' HTML), so the
folder can be zipped and sent. ``run_all.sh`` calls this after every run, a stopped one
too (the banner and the chapter table say which notebook stopped, how and in which cell);
``python -m skinhelpers.run.report RUN_DIR`` renders an existing run folder.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from skinhelpers.evaluate.glossary import glossary_html
from skinhelpers.evaluate.next_steps import what_next
from skinhelpers.files import atomic_path
from skinhelpers.progress import progress_match
from skinhelpers.share.card_results import bootstrap_text, test_size_text
from skinhelpers.share.model_card import write_model_card

# run with `python -m` this module is "__main__": its spec keeps its name under skinhelpers
log = logging.getLogger(__spec__.name if __spec__ else __name__)

_NB = re.compile(r"^(\d\d)_.+\.ipynb$")


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, text: str) -> None:
    """Atomically, readable by everyone (the report is meant to be shared)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)


def _title_of(nb) -> str:
    """The first markdown heading of a notebook (without the leading #'s)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def _status(nb) -> str:
    """``ok``, ``failed`` (a cell raised) or ``incomplete`` (cells never ran)."""
    failed = any(
        o.get("output_type") == "error"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    if failed:
        return "failed"
    pm = nb.metadata.get("papermill", {})
    if pm.get("exception"):
        return "failed"
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    if code and all(c.get("execution_count") is None for c in code):
        return "not executed"
    return "ok"


_WIDGET = "application/vnd.jupyter.widget-view+json"


def _progress_lines_out(text: str, keep_last: bool) -> str:
    """``text`` without its progress-bar lines; ``keep_last``: each bar's last state (the
    last line of a block of consecutive lines of one bar) stays."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        m = progress_match(line)
        if m is None:
            out.append(line)
            continue
        if not keep_last:
            continue
        nxt = progress_match(lines[i + 1]) if i + 1 < len(lines) else None
        if nxt is None or nxt.group("desc") != m.group("desc"):
            out.append(line)
    return "\n".join(out)


def strip_progress(nb, keep_last: bool = False) -> int:
    """Remove progress bars from the outputs of ``nb`` (in place; merge the stream
    fragments first): their text lines (:func:`skinhelpers.progress.is_progress_line`) and
    JupyterLab's bar widgets. ``keep_last`` keeps each bar's final state (the version with
    code); the story keeps none. Returns how many outputs changed or went."""
    changed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                text = o.get("text", "")
                new = _progress_lines_out(text, keep_last)
                if new != text:
                    changed += 1
                    if not new.strip():
                        continue
                    o["text"] = new
            elif _WIDGET in o.get("data", {}) and not keep_last:
                plain = o["data"].get("text/plain", "")
                plain = "".join(plain) if isinstance(plain, list) else plain
                if not plain.strip() or all(progress_match(x) for x in plain.strip().splitlines()):
                    changed += 1
                    continue
            kept.append(o)
        cell["outputs"] = kept
    return changed


def html_exporters() -> tuple:
    """The two HTML exporters of a notebook's pages: with code, and the story (no input,
    no prompts). One pair serves every notebook of a report, as nbconvert's command line
    uses one exporter for all its notebooks: each new one compiles its templates again
    (0.1 s)."""
    from nbconvert import (
        HTMLExporter,  # local: notebooks extra, slow to import: only the report needs it
    )

    story = {"exclude_input": True, "exclude_input_prompt": True, "exclude_output_prompt": True}
    return HTMLExporter(), HTMLExporter(**story)


def render_notebook(nb_path: Path, out_dir: Path, exporters: tuple | None = None) -> dict:
    """Render one executed notebook twice (with code / story); return its index entry.

    Stream fragments are merged first (a progress bar's updates become one block; what a
    carriage return overwrote is dropped, as the nbconvert command line does); the
    version with code keeps each progress bar's last state, the story none.
    ``exporters``: :func:`html_exporters` (made here when not given)."""
    import copy

    import nbformat  # local: notebooks extra: only the runner/report need it
    from nbconvert.preprocessors import (
        CoalesceStreamsPreprocessor,
    )

    nb = nbformat.read(nb_path, as_version=4)
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    title = _title_of(nb) or nb_path.stem
    entry = {
        "name": nb_path.name,
        "title": title,
        "status": _status(nb),
        "html": f"{nb_path.stem}.html",
        "story": f"{nb_path.stem}.story.html",
        "seconds": nb.metadata.get("papermill", {}).get("duration"),
    }
    with_code, story = exporters or html_exporters()
    for fname, exporter, keep_last in ((entry["html"], with_code, True),
                                       (entry["story"], story, False)):  # fmt: skip
        version = copy.deepcopy(nb)
        strip_progress(version, keep_last=keep_last)
        body, _ = exporter.from_notebook_node(version, resources={"metadata": {"name": title}})
        _write(out_dir / fname, body)
    return entry


# ----------------------------------------------------------------------------- index page

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#fde2e2;border:2px solid #c0392b;color:#8e1b10;padding:.7em 1em;
font-weight:600;margin:1em 0}
.ok{color:#1e7e34}.failed{color:#c0392b;font-weight:600}.missing{color:#888}
.muted{color:#666;font-size:.9em} code{background:#f6f6f6;padding:0 .2em}
details{margin:.3em 0} summary{cursor:pointer}
ul.sent li{margin:.3em 0}
"""


_STOPPED = {
    "failed": "failed",
    "kernel_died": "kernel died",
    "timeout": "timed out",
    "kernel_missing": "kernel did not start",
    "interrupted": "interrupted",
}


def _e(x) -> str:
    return html.escape(str(x))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _kv_table(d: dict) -> str:
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td><code>{_e(_fmt(v))}</code></td></tr>" for k, v in d.items()
    )
    return f"<table>{rows}</table>"


def _ci_cell(v) -> str:
    if isinstance(v, dict) and "value" in v:
        lo, hi = v.get("ci_low"), v.get("ci_high")
        ci = (
            f" <span class='muted'>({lo:.3f}&ndash;{hi:.3f})</span>"
            if isinstance(lo, (int, float)) and isinstance(hi, (int, float))
            else ""
        )
        return f"<td class='num'>{v['value']:.3f}{ci}</td>"
    if isinstance(v, (int, float)):
        return f"<td class='num'>{v:.3f}</td>"
    return "<td class='missing'>&ndash;</td>"


def _headlines(m: dict, reported: bool) -> dict:
    """``{name: headline}`` of the reported models (the primary checkpoint, a K-fold
    ensemble, the primary per lesion) or, ``reported=False``, of the others (not for
    choosing). A run evaluated before the appendix existed reports every checkpoint."""
    models = {n: mm for n, mm in (m.get("models") or {}).items() if isinstance(mm, dict)}
    keep = (m.get("primary"), "ensemble")
    if "selection" not in m:
        return {n: mm.get("headline", {}) for n, mm in models.items()} if reported else {}
    out = {n: mm.get("headline", {}) for n, mm in models.items() if (n in keep) == bool(reported)}
    les = (m.get("per_lesion") or {}).get("result") or {}
    if reported and les.get("headline"):
        out[f"{m.get('primary')}, per lesion"] = les["headline"]
    return out


def _metrics_section(m: dict) -> str:
    """Headline metrics of ``metrics.json`` (schema written by notebook 08)."""
    parts = []
    headline = _headlines(m, True)
    if not headline and isinstance(m.get("headline"), dict):
        headline = {"model": m["headline"]}
    if headline:
        keys = []
        for h in headline.values():
            keys += [k for k in h if k not in keys]
        head = "".join(f"<th>{_e(k)}</th>" for k in keys)
        rows = ""
        for name, h in headline.items():
            star = " &#9733;" if name == m.get("primary") else ""
            rows += (
                f"<tr><th>{_e(name)}{star}</th>"
                + "".join(_ci_cell(h.get(k)) for k in keys)
                + "</tr>"
            )
        parts.append(
            f"<table><tr><th>checkpoint</th>{head}</tr>{rows}</table>"
            f"<p class='muted'>Held-out test split, {_e(test_size_text(m))}; 95% "
            f"bootstrap confidence intervals in brackets ({_e(bootstrap_text(m))})."
            + (" &#9733; the checkpoint the report's conclusions use." if m.get("primary") else "")
            + (
                f" {_e((m.get('selection') or {}).get('sentence', '').replace('**', ''))}"
                " The other checkpoints are in the appendix below, not for choosing;"
                " <em>per lesion</em>: each lesion's images averaged and counted once."
                if m.get("selection")
                else ""
            )
            + "</p>"
        )
    sentences = list(m.get("sentences") or [])
    if sentences:
        parts.append(
            "<ul class='sent'>" + "".join(f"<li>{_e(s)}</li>" for s in sentences) + "</ul>"
        )
    prob = m.get("probabilities")
    if isinstance(prob, dict):
        parts.append(
            f"<p class='muted'>The probabilities <code>predict</code>, the export and the demo "
            f"give: {_e(prob.get('description', ''))}.</p>"
        )
    return "".join(parts) or "<p class='missing'>metrics.json holds no headline metrics.</p>"


def _appendix_section(m: dict) -> str:
    """The other checkpoints' test numbers, with why they are not for choosing."""
    others = _headlines(m, False)
    if not others:
        return ""
    keys: list[str] = []
    for h in others.values():
        keys += [k for k in h if k not in keys]
    rows = "".join(
        f"<tr><th>{_e(n)}</th>" + "".join(_ci_cell(h.get(k)) for k in keys) + "</tr>"
        for n, h in others.items()
    )
    note = (m.get("not_for_choosing") or {}).get("note") or (m.get("selection") or {}).get(
        "not_for_choosing", ""
    )
    return (
        "<h2>Appendix: the other checkpoints on test, not for choosing</h2>"
        f"<p>{_e(note)}</p><table><tr><th>checkpoint</th>"
        + "".join(f"<th>{_e(k)}</th>" for k in keys)
        + f"</tr>{rows}</table>"
    )


def _next_section(run_dir: Path, m: dict) -> str:
    steps = what_next(m, any(run_dir.glob("external_*_metrics.json")))
    return "<h2>What next</h2><ol>" + "".join(f"<li>{_e(x)}</li>" for x in steps) + "</ol>"


def _index_html(run_dir: Path, entries: list[dict]) -> str:
    run = _read(run_dir / "run.json") or {}
    manifest = _read(run_dir / "manifest.json") or {}
    metrics = _read(run_dir / "metrics.json")
    timings = run.get("timings_s", {})
    dataset = manifest.get("dataset") or run.get("dataset") or "?"
    synthetic = bool(manifest.get("synthetic")) or dataset == "demo"
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>skinlesion-lab report: {_e(run_dir.name)}</title><style>{_CSS}</style>"
        f"</head><body><h1>skinlesion-lab report: <code>{_e(run_dir.name)}</code></h1>"
        f"<p class='muted'>rendered {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}"
        + (f"; run started {_e(run['started'])}" if run.get("started") else "")
        + (f", finished {_e(run['finished'])}" if run.get("finished") else "")
        + "</p>"
    ]
    if synthetic:
        out.append(
            "<div class='banner'>SYNTHETIC DATA: this run used the generated demo "
            "set. Nothing here is a medical result; it shows the pipeline working."
            "</div>"
        )
    if run.get("failed"):
        fail = run.get("failure") or {}
        how = _STOPPED.get(fail.get("status"), "failed")
        cell = (
            f", cell {fail.get('cell') if fail.get('cell') is not None else '?'} "
            f"(index {fail['cell_index']})"
            if "cell_index" in fail
            else ""
        )
        why = f": {_e(fail['error'])}" if fail.get("error") else ""
        out.append(
            f"<div class='banner'>The run stopped: notebook {_e(run['failed'])} "
            f"{how}{cell}{why} (its page shows where). Continue it with "
            f"<code>./run_all.sh --run {_e(run.get('run_name', run_dir.name))} "
            "--resume</code>.</div>"
        )
    # dataset
    classes = manifest.get("classes") or []
    sub = manifest.get("subsample") or {}
    n_images = None
    if (run_dir / "manifest.csv").exists():
        with open(run_dir / "manifest.csv", "rb") as f:
            n_images = max(0, sum(1 for _ in f) - 1)
    ds = {
        "dataset": dataset,
        "images": n_images,
        "root": manifest.get("root", ""),
        "classes": ", ".join(map(str, classes)),
        "positive class": manifest.get("positive_class"),
    }
    if sub:
        ds["subsample"] = (
            f"{sub.get('rows_after')} of {sub.get('rows_before')} images "
            f"(max_images={sub.get('max_images')}, seed {sub.get('seed')})"
        )
    if manifest.get("sources"):
        ds["sources"] = ", ".join(
            f"{x['name']} ({x.get('images', '?')} images)" for x in manifest["sources"]
        )
        ds["label space"] = manifest.get("label_space", "first")
    out.append("<h2>Dataset</h2>" + _kv_table({k: v for k, v in ds.items() if v}))
    if (run_dir / "MODEL_CARD.md").exists():
        out.append(
            "<p><b>Model card</b> (intended use, data, metrics, operating points, "
            "limits, licence): <a href='model_card.html'>read</a> &middot; "
            "<a href='../MODEL_CARD.md'>MODEL_CARD.md</a></p>"
        )
    out.append(
        "<p><b>Glossary</b> of the terms the report uses (balanced accuracy, ROC-AUC, "
        "bootstrap, Wilson interval, EMA, logit adjustment, TTA, Grad-CAM, ...): "
        "<a href='glossary.html'>read</a></p>"
    )
    # headline metrics
    out.append("<h2>Headline results</h2>")
    out.append(
        _metrics_section(metrics)
        if isinstance(metrics, dict)
        else "<p class='missing'>No <code>metrics.json</code> in this run folder yet "
        "(written by notebook 08).</p>"
    )
    if isinstance(metrics, dict) and metrics.get("sources"):
        out.append("<h2>Per source</h2>")
        rows = "".join(
            f"<tr><td>{_e(name)}</td><td class='num'>{r.get('n_images')}</td>"
            f"{_ci_cell(r.get('balanced_accuracy'))}{_ci_cell(r.get('melanoma_auc'))}</tr>"
            for name, r in metrics["sources"].items()
        )
        out.append(
            "<table><tr><th>source</th><th>test images</th><th>balanced accuracy (classes "
            "with 20+ images)</th><th>melanoma AUC</th></tr>" + rows + "</table>"
        )
    # notebooks
    rows = ""
    results = run.get("results") or {}
    for e in entries:  # run.json knows how a chapter ended (a killed kernel leaves no error)
        status = (results.get(e["name"]) or {}).get("status")
        if status in _STOPPED and e["status"] != "render failed":
            e["status"] = _STOPPED[status]
        t = timings.get(e["name"], e.get("seconds"))
        cls = "ok" if e["status"] == "ok" else "failed"
        rows += (
            f"<tr><td>{_e(e['name'][:2])}</td><td>{_e(e['title'])}</td>"
            f"<td><a href='{_e(e['story'])}'>story</a> &middot; "
            f"<a href='{_e(e['html'])}'>with code</a></td>"
            f"<td class='num'>{'' if t is None else f'{t:.0f} s'}</td>"
            f"<td class='{cls}'>{_e(e['status'])}</td></tr>"
        )
    for name in run.get("notebooks", []):
        if name not in {e["name"] for e in entries}:
            res = results.get(name) or {}
            state = (
                f"skipped: {res.get('reason', '')}" if res.get("status") == "skipped" else "missing"
            )
            rows += (
                f"<tr><td>{_e(name[:2])}</td><td class='missing'>{_e(name)}</td>"
                f"<td class='missing'>not run</td><td></td><td class='missing'>"
                f"{_e(state)}</td></tr>"
            )
    out.append(
        "<h2>Chapters</h2><p class='muted'><em>story</em> hides the code for "
        "readers who want only the narrative, tables and figures.</p>"
        f"<table><tr><th>#</th><th>chapter</th><th>read</th><th>time</th>"
        f"<th>status</th></tr>{rows}</table>"
    )
    if isinstance(metrics, dict) and metrics.get("models"):
        out.append(_next_section(run_dir, {**metrics, "synthetic": synthetic}))
        out.append(_appendix_section(metrics))
    # parameters
    out.append("<h2>Parameters</h2>")
    if run:
        top = {k: run[k] for k in ("profile", "run_name", "data_dir", "command") if k in run}
        out.append(_kv_table(top))
        out.append(
            "<details open><summary>run parameters (passed to every notebook that "
            "declares them)</summary>" + _kv_table(run.get("parameters", {})) + "</details>"
        )
    for p in sorted((run_dir / "params").glob("*.json")):
        rec = _read(p) or {}
        out.append(
            f"<details><summary>{_e(p.stem)}</summary>"
            + _kv_table(rec.get("params", rec))
            + "</details>"
        )
    out.append("</body></html>")
    return "\n".join(out)


def _write_model_card(run_dir: Path, out_dir: Path) -> None:
    """``MODEL_CARD.md`` in the run folder and its HTML beside the report pages; a failure
    is printed, not fatal (the report matters more)."""
    import mistune  # comes with nbconvert

    try:
        card = write_model_card(run_dir)
    except Exception as e:
        log.error(f"model card not written: {type(e).__name__}: {e}")
        return
    body = mistune.html(card.read_text(encoding="utf-8"))
    _write(
        out_dir / "model_card.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>Model card: "
        f"{_e(run_dir.name)}</title><style>{_CSS}</style></head><body>{body}"
        "<p class='muted'><a href='index.html'>back to the report</a></p></body></html>",
    )


def render_report(run_dir, out_dir=None) -> Path:
    """Render every executed ``NN_*.ipynb`` of ``run_dir`` and the index; return the
    index path. A notebook that cannot be rendered is listed as failed, not fatal."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    out_dir = Path(out_dir) if out_dir else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(p for p in run_dir.glob("*.ipynb") if _NB.match(p.name))
    entries = []
    exporters = html_exporters() if notebooks else None
    for nb in notebooks:
        try:
            entries.append(render_notebook(nb, out_dir, exporters))
        except Exception as e:  # noqa: BLE001 - a broken notebook must not hide the others
            entries.append(
                {
                    "name": nb.name,
                    "title": f"{nb.name} (could not be rendered: {type(e).__name__}: {e})",
                    "status": "render failed",
                    "html": "#",
                    "story": "#",
                }
            )
    _write_model_card(run_dir, out_dir)
    _write(
        out_dir / "glossary.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>Glossary: "
        f"{_e(run_dir.name)}</title><style>{_CSS}</style></head><body><h1>Glossary</h1>"
        f"{glossary_html()}<p class='muted'><a href='index.html'>back to the report</a></p>"
        "</body></html>",
    )
    index = out_dir / "index.html"
    _write(index, _index_html(run_dir, entries))
    return index


if __name__ == "__main__":  # python -m skinhelpers.run.report RUN_DIR
    if len(sys.argv) != 2:
        sys.exit("usage: python -m skinhelpers.run.report RUN_DIR")
    print(render_report(sys.argv[1]))
