"""Validation: find what is wrong with a manifest, report it, let the user decide.

``report = validate(df)`` opens every image (in threads), hashes are already in the
manifest, and returns a :class:`ValidationReport`. ``report.summary()`` is a table of
problem kinds with counts and the action that :meth:`ValidationReport.apply` will take;
``report.findings`` lists every affected file. ``clean = report.apply(df, actions)``
returns a new manifest with the chosen rows dropped (the raw files are never touched).

Kinds and their actions (default first):

=================  ==========================================================================
unknown_label      drop (a label no class of the dataset knows, e.g. a typo in the metadata
                   file: the rows are named) | error (stop, naming them)
missing_file       drop (forced: there is nothing to read)
unreadable         drop (forced: truncated, corrupt or not an image)
non_rgb            keep (converted to RGB when read: grayscale, RGBA, CMYK, palette, 16-bit)
                   | drop
label_conflict     drop (every copy of a byte-identical image filed under 2+ labels) | keep
split_overlap      drop_train (identical image in the shipped train and test split: drop the
                   train copies, keep the shipped test set intact) | keep
cross_source_copy  dedupe (an image of a later source that is, by content, a copy of an image of
                   another source: keep the copy with a lesion id and metadata) | keep
cross_source_conflict  drop_copy (such a copy whose two harmonised labels differ: keep the
                   twin with a lesion id and metadata, with its own label) | drop (both) | keep
byte_identical     dedupe (keep the first copy of identical files with one label) | keep
duplicate_id       dedupe (the same image_id on several rows: keep the first) | keep
empty_class_folder report only (from loading)
not_an_image       report only: non-image files found and skipped while loading
=================  ==========================================================================
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image

from skinhelpers.data.manifest import without_attrs
from skinhelpers.progress import progress

log = logging.getLogger(__name__)

# a finding's "drop" flag: whether its row goes when the kind's action removes rows
ACTIONS = {
    "unknown_label": ("drop", "error"),
    "missing_file": ("drop",),
    "unreadable": ("drop",),
    "non_rgb": ("keep", "drop"),
    "label_conflict": ("drop", "keep"),
    "split_overlap": ("drop_train", "keep"),
    "cross_source_copy": ("dedupe", "keep"),
    "cross_source_conflict": ("drop_copy", "drop", "keep"),
    "byte_identical": ("dedupe", "keep"),
    "duplicate_id": ("dedupe", "keep"),
    "empty_class_folder": ("report",),
    "not_an_image": ("report",),
}
DEFAULT_ACTIONS = {k: v[0] for k, v in ACTIONS.items()}
# the order in which actions are applied: later steps see the survivors of earlier ones
ORDER = [
    "unknown_label",
    "missing_file",
    "unreadable",
    "non_rgb",
    "label_conflict",
    "split_overlap",
    "cross_source_conflict",
    "cross_source_copy",
    "byte_identical",
    "duplicate_id",
]


MODE_NAMES = {
    "L": "grayscale",
    "LA": "grayscale+alpha",
    "RGBA": "RGBA (alpha)",
    "CMYK": "CMYK",
    "P": "palette",
    "1": "1-bit",
    "I;16": "16-bit",
    "I;16B": "16-bit",
    "I;16L": "16-bit",
    "I": "32-bit integer",
    "F": "32-bit float",
}


def inspect_image(path: str | None) -> dict:
    """Open and fully decode one file with Pillow: mode, size, bit depth, or the error."""
    if not isinstance(path, str) or not path:
        return {
            "ok": False,
            "error": "missing",
            "mode": None,
            "width": None,
            "height": None,
            "format": None,
        }
    try:
        with Image.open(path) as im:
            mode, fmt, (w, h) = im.mode, im.format, im.size
            im.load()  # full decode: truncated files fail here
        return {"ok": True, "error": None, "mode": mode, "width": w, "height": h, "format": fmt}
    except FileNotFoundError:
        return {
            "ok": False,
            "error": "missing",
            "mode": None,
            "width": None,
            "height": None,
            "format": None,
        }
    except Exception as e:  # PIL raises many types for bad files
        return {
            "ok": False,
            "error": f"{type(e).__name__}: {e}",
            "mode": None,
            "width": None,
            "height": None,
            "format": None,
        }


def inspect_images(df: pd.DataFrame, workers: int = 4, show_progress: bool = True) -> pd.DataFrame:
    """:func:`inspect_image` for every row (threads; Pillow releases the GIL)."""
    paths = df["path"].tolist()
    with ThreadPoolExecutor(workers) as ex:
        it = ex.map(inspect_image, paths, chunksize=64)
        rows = list(
            progress(
                it, total=len(paths), desc="validate images", unit="img", disable=not show_progress
            )
        )
    info = pd.DataFrame(rows, index=df.index)
    info.insert(0, "relpath", df["relpath"].to_numpy())
    return info


@dataclass
class ValidationReport:
    """What :func:`validate` found. ``findings``: one row per (kind, affected file)."""

    dataset: str
    n_rows: int
    findings: pd.DataFrame
    image_info: pd.DataFrame
    load_issues: list = field(default_factory=list)

    def counts(self, by: str = "relpath") -> dict[str, int]:
        """Affected files per kind (``by="case"``: distinct cases, e.g. duplicate sets)."""
        c = {k: 0 for k in ACTIONS}
        for k, n in self.findings.groupby("kind")[by].nunique().items():
            c[k] = int(n)
        for li in self.load_issues:
            if li["kind"] in ("empty_class_folder", "not_an_image"):
                c[li["kind"]] += int(li.get("count", 1))
        return c

    def summary(self, actions: dict | None = None) -> pd.DataFrame:
        """One row per kind: cases, files, the action :meth:`apply` takes, the choices."""
        acts = {**DEFAULT_ACTIONS, **(actions or {})}
        files, cases = self.counts(), self.counts("case")
        rows = [
            {
                "kind": k,
                "cases": cases[k],
                "files": files[k],
                "action": acts[k],
                "choices": " | ".join(ACTIONS[k]),
            }
            for k in ACTIONS
        ]
        return pd.DataFrame(rows)

    def messages(self, limit: int = 10) -> list[str]:
        """Readable lines naming the affected files (``limit`` per kind)."""
        out = [f"{li['kind']}: {li['message']}" for li in self.load_issues]
        for kind, g in self.findings.groupby("kind", sort=False):
            for _, r in g.head(limit).iterrows():
                out.append(f"{kind}: {r['relpath']}: {r['detail']}")
            if len(g) > limit:
                out.append(f"{kind}: ... and {len(g) - limit} more")
        return out

    def __str__(self) -> str:
        s = self.summary()
        s = s[s["files"] > 0]
        head = f"Validation of {self.dataset}: {self.n_rows} rows"
        if s.empty:
            return head + ": no problems found."
        return head + "\n" + s.to_string(index=False) + "\n" + "\n".join(self.messages(5))

    def _repr_html_(self) -> str:
        return f"<b>Validation of {self.dataset}</b>: {self.n_rows} rows" + self.summary().to_html(
            index=False
        )

    def apply(
        self, df: pd.DataFrame, actions: dict | None = None, verbose: bool = True
    ) -> pd.DataFrame:
        """Return a copy of ``df`` without the rows the chosen actions drop."""
        acts = {**DEFAULT_ACTIONS, **(actions or {})}
        for k, a in acts.items():
            if k not in ACTIONS:
                raise ValueError(f"unknown validation kind '{k}'; kinds are {sorted(ACTIONS)}")
            if a not in ACTIONS[k]:
                raise ValueError(
                    f"action '{a}' is not allowed for '{k}'; choose from {list(ACTIONS[k])}"
                )
        keep = pd.Series(True, index=df.index)
        dropped: dict[str, int] = {}
        for kind in ORDER:
            f = self.findings[self.findings["kind"] == kind]
            if f.empty or acts[kind] == "keep":
                continue
            if acts[kind] == "error":
                raise ValueError(
                    f"{len(f)} row(s) with {kind} and validation_actions {{'{kind}': 'error'}}: "
                    + "; ".join(f"{r.relpath}: {r.detail}" for r in f.head(10).itertuples())
                )
            before = int(keep.sum())
            drop = f["drop"] if acts[kind] != "drop" else pd.Series(True, index=f.index)
            keep &= ~df.index.isin(set(f.loc[drop, "row"]))
            dropped[kind] = before - int(keep.sum())
        out = df[keep].reset_index(drop=True)
        out.attrs = dict(df.attrs)
        out.attrs["validation"] = {
            "actions": acts,
            "dropped": dropped,
            "rows_before": len(df),
            "rows_after": len(out),
        }
        if verbose:
            parts = ", ".join(f"{k}: {v}" for k, v in dropped.items() if v) or "nothing"
            log.info(f"{self.dataset}: kept {len(out)} of {len(df)} rows (dropped {parts})")
        return out


def _originals_first(g: pd.DataFrame) -> pd.DataFrame:
    """Order copies so the one to keep comes first: not a "name(1).jpg" copy, then the
    shipped test copy (the test set stays intact), then by path."""
    key = pd.DataFrame(
        {
            "copy": g["relpath"].str.contains(r"\(\d+\)\.\w+$", regex=True),
            "train": g["source_split"].ne("test"),
            "relpath": g["relpath"],
        },
        index=g.index,
    )
    return g.loc[key.sort_values(["copy", "train", "relpath"]).index]


def _finding(kind, r, detail, drop, case=None):
    return {
        "kind": kind,
        "row": r.name,
        "case": case if case is not None else r["relpath"],
        "image_id": r["image_id"],
        "relpath": r["relpath"],
        "label": r["label"],
        "detail": detail,
        "drop": drop,
    }


def _cross_source_findings(df: pd.DataFrame, usable) -> list[dict]:
    """``cross_source_copy`` / ``cross_source_conflict`` from the ``copy_of`` column that
    :func:`skinhelpers.data.sources.join_sources` fills (a copy and the twin it keeps)."""
    if "copy_of" not in df:
        return []
    found = []
    row_of = {r: i for i, r in zip(df.index, df["relpath"])}
    ok = set(usable)
    for i, r in df[df["copy_of"].notna()].iterrows():
        j = row_of.get(r["copy_of"])
        if j is None or i not in ok or j not in ok:
            continue
        t = df.loc[j]
        where = f"{r['source']} copy of {t['source']} image {t['relpath']}"
        dist = f"(hash distance {int(r['copy_distance'])})" if "copy_distance" in df else ""
        if r["label"] == t["label"]:
            found.append(_finding("cross_source_copy", r, f"{where} {dist}", True, t["relpath"]))
            continue
        detail = f"{where} {dist}, labelled {r['label']} there {t['label']}"
        found.append(_finding("cross_source_conflict", r, detail, True, t["relpath"]))
        found.append(
            _finding(
                "cross_source_conflict",
                t,
                f"twin of {r['relpath']}: labelled {t['label']} here, {r['label']} there",
                False,
                t["relpath"],
            )
        )
    return found


def validate(df: pd.DataFrame, workers: int = 4, show_progress: bool = True) -> ValidationReport:
    """Check every row of a manifest. See the module docstring for the kinds.

    ``findings["row"]`` is the manifest's index label, so :meth:`ValidationReport.apply`
    must get the same ``df`` (not a re-indexed copy).
    """
    attrs = df.attrs
    df = without_attrs(df)  # the loops below hand out thousands of groups and rows
    info = inspect_images(df, workers=workers, show_progress=show_progress)
    found = []
    for i, r in df.iterrows():
        inf = info.loc[i]
        if inf["error"] == "missing":
            found.append(_finding("missing_file", r, "file not found", True))
        elif not inf["ok"]:
            found.append(_finding("unreadable", r, inf["error"], True))
        elif inf["mode"] != "RGB":
            detail = MODE_NAMES.get(inf["mode"], inf["mode"])
            found.append(_finding("non_rgb", r, f"mode {inf['mode']} ({detail})", True))
    if "label_idx" in df:
        classes = list(attrs.get("classes") or [])
        for _, r in df[df["label_idx"] < 0].iterrows():
            found.append(
                _finding("unknown_label", r, f"label '{r['label']}' is not one of {classes}", True)
            )
    usable = df[info["ok"].to_numpy()]
    # identical content: one hash, several files
    for sha, g in usable.groupby("sha1", sort=True):
        if len(g) < 2 or ("source" in g and g["source"].nunique() > 1):
            continue  # copies across sources: the cross-source kinds below
        g = _originals_first(g)
        labels = sorted(set(g["label"]))
        names = ", ".join(g["relpath"])
        if {"train", "test"} <= set(g["source_split"].dropna()):
            for _, r in g.iterrows():
                found.append(
                    _finding(
                        "split_overlap",
                        r,
                        f"identical files in train and test: {names}",
                        r["source_split"] == "train",
                        sha,
                    )
                )
        if len(labels) > 1:
            for _, r in g.iterrows():
                found.append(
                    _finding(
                        "label_conflict",
                        r,
                        f"identical files under labels {labels}: {names}",
                        True,
                        sha,
                    )
                )
            continue  # the conflict decides; do not also dedupe
        for j, (_, r) in enumerate(g.iterrows()):
            found.append(
                _finding(
                    "byte_identical",
                    r,
                    f"identical to {g['relpath'].iloc[0]}"
                    if j
                    else f"has {len(g) - 1} identical copy(ies)",
                    j > 0,
                    sha,
                )
            )
    found += _cross_source_findings(df, usable.index)
    # the same id on several rows (HAM: a duplicated CSV row; folders: one id twice), within
    # one source (two sources may name one picture alike: the cross-source kinds above)
    by = ["source", "image_id"] if "source" in df else ["image_id"]
    for key, g in df.groupby(by, sort=True):
        iid = key[-1] if isinstance(key, tuple) else key
        if len(g) < 2:
            continue
        g = _originals_first(g)
        for j, (_, r) in enumerate(g.iterrows()):
            found.append(
                _finding(
                    "duplicate_id",
                    r,
                    f"image_id '{iid}' on {len(g)} rows: " + ", ".join(g["relpath"]),
                    j > 0,
                    iid,
                )
            )
        sp = set(g["source_split"].dropna())
        if {"train", "test"} <= sp and g["sha1"].nunique() > 1:
            # the same id in shipped train and test, with different content
            for _, r in g.iterrows():
                found.append(
                    _finding(
                        "split_overlap",
                        r,
                        f"image_id '{iid}' in train and test (different files)",
                        r["source_split"] == "train",
                        iid,
                    )
                )
    cols = ["kind", "row", "case", "image_id", "relpath", "label", "detail", "drop"]
    findings = pd.DataFrame(found, columns=cols)
    return ValidationReport(
        dataset=str(attrs.get("dataset")),
        n_rows=len(df),
        findings=findings,
        image_info=info,
        load_issues=list(attrs.get("load_issues", [])),
    )
