"""One home per default: a notebook parameter keeps the literal default of the library
option of the same name (papermill needs literals in the parameters cell), and the run
profiles list only what they change."""

from __future__ import annotations

import ast
import inspect
from dataclasses import fields

import papermill as pm
import pytest

from skinhelpers.data.cache import build_cache
from skinhelpers.data.hashes import phash_codes
from skinhelpers.data.sources import load_dataset
from skinhelpers.evaluate.calibration import calibration_summary
from skinhelpers.evaluate.external import content_overlap
from skinhelpers.evaluate.scores import evaluate_predictions
from skinhelpers.evaluate.subgroups import subgroup_table
from skinhelpers.explore.leakage import compare_splits
from skinhelpers.files import PROJECT_ROOT
from skinhelpers.run import profiles
from skinhelpers.split.grouped import grouped_split, resolve_split_seed
from skinhelpers.train.config import TrainConfig

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
# notebook parameters whose value means something else than the TrainConfig field
NOT_TRAIN_OPTIONS = {"arch"}  # 07: "" follows notebook 06's winner


def _default(fn, arg):
    return inspect.signature(fn).parameters[arg].default


# other library defaults, per notebook: parameter -> (function, argument)
LIBRARY = {
    "01_eda": {
        "label_space": (load_dataset, "label_space"),
        "unmapped_classes": (load_dataset, "unmapped_classes"),
        "split_seed": (resolve_split_seed, "split_seed"),
    },
    "02_quality_preprocessing": {
        "image_size": (build_cache, "size"),
        "preprocess": (build_cache, "preprocess"),
        "resize_mode": (build_cache, "resize_mode"),
    },
    "03_leakage": {
        "hash_size": (phash_codes, "hash_size"),
        "test_size": (compare_splits, "test_size"),
    },
    "04_splitting": {
        "val_size": (grouped_split, "val_size"),
        "test_size": (grouped_split, "test_size"),
        "n_folds": (grouped_split, "n_folds"),
        "split_seed": (resolve_split_seed, "split_seed"),
    },
    "05_augmentation": {"image_size": (build_cache, "size")},
    # 07 trains at the size 02 caches (and 05 shows)
    "07_final_retrain": {"image_size": (build_cache, "size")},
    "08_evaluation": {
        "n_bootstrap": (evaluate_predictions, "n_bootstrap"),
        "calibration_bins": (calibration_summary, "n_bins"),
        "subgroup_min_n": (subgroup_table, "min_n"),
        "subgroup_min_pos": (subgroup_table, "min_pos"),
    },
    "09_external_validation": {
        "max_distance": (content_overlap, "max_distance"),
        "n_bootstrap": (evaluate_predictions, "n_bootstrap"),
    },
}


def _notebook_defaults(path) -> dict:
    return {k: ast.literal_eval(v["default"]) for k, v in pm.inspect_notebook(str(path)).items()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defaults_agree_with_the_library(path):
    nb = _notebook_defaults(path)
    expected = {
        k: TRAIN_DEFAULTS[k] for k in nb if k in TRAIN_DEFAULTS and k not in NOT_TRAIN_OPTIONS
    }
    expected.update({k: _default(fn, arg) for k, (fn, arg) in LIBRARY.get(path.stem, {}).items()})
    wrong = {k: (nb[k], v) for k, v in expected.items() if nb[k] != v}
    assert not wrong, f"{path.name}: parameter defaults (notebook, library) disagree: {wrong}"


# one name, one meaning, one default in every notebook, except these (with why)
DIFFERENT_ON_PURPOSE = {
    "test_size": "03: the test share of its naive-vs-grouped demonstration; 04: the split",
    "tta_views": "09 scores a whole external set: one view by default, 08 eight",
}


def test_a_parameter_has_one_default_in_every_notebook():
    """A reader running the chapters by hand sees the same default for a name in every
    chapter (image_size was 128 in 02 and 05 but 64 in 07)."""
    seen: dict[str, dict] = {}
    for path in NOTEBOOKS:
        for k, v in _notebook_defaults(path).items():
            seen.setdefault(k, {})[path.stem[:2]] = v
    differ = {
        k: v
        for k, v in seen.items()
        if len({repr(x) for x in v.values()}) > 1 and k not in DIFFERENT_ON_PURPOSE
    }
    assert not differ, f"one parameter, several defaults: {differ}"
    for k in DIFFERENT_ON_PURPOSE:
        assert len({repr(x) for x in seen[k].values()}) > 1, f"{k} agrees now: drop it"


def test_the_check_sees_a_disagreement(tmp_path):
    """The check above is not vacuous: a notebook saying balance_power = 0.0 is caught."""
    import nbformat

    nb = nbformat.read(NOTEBOOKS[6], as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "balance_power = 0.5" in cell.source
    cell.source = cell.source.replace("balance_power = 0.5", "balance_power = 0.0")
    nbformat.write(nb, tmp_path / "07_final_retrain.ipynb")
    with pytest.raises(AssertionError, match="balance_power"):
        test_notebook_defaults_agree_with_the_library(tmp_path / "07_final_retrain.ipynb")


def test_every_library_mapping_names_a_declared_parameter():
    for stem, mapping in LIBRARY.items():
        nb = _notebook_defaults(PROJECT_ROOT / "notebooks" / f"{stem}.ipynb")
        assert set(mapping) <= set(nb), f"{stem}: {sorted(set(mapping) - set(nb))} not declared"


@pytest.mark.parametrize("name", sorted(profiles.PROFILES))
def test_profiles_list_only_what_they_change(name):
    same = {
        k: v
        for k, v in profiles.PROFILES[name].items()
        if k in TRAIN_DEFAULTS and k not in NOT_TRAIN_OPTIONS and v == TRAIN_DEFAULTS[k]
    }
    assert not same, (
        f"profile {name} repeats TrainConfig defaults {same}: "
        "leave them to skinhelpers.train.config.TrainConfig"
    )
    declared = set().union(*(pm.inspect_notebook(str(p)) for p in NOTEBOOKS))
    assert set(profiles.PROFILES[name]) <= declared, (
        f"profile {name} sets parameters no notebook declares"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_start_notebook_reads_the_names_papermill_reads(path, monkeypatch):
    """Kernels read the parameters cell with ast (no papermill import); the names, their
    order and their defaults as written are papermill's."""
    from skinhelpers.run import folders

    monkeypatch.setenv("SKINHELPERS_NOTEBOOK_DIR", str(path.parent))
    ours = folders.notebook_parameters(path.stem)
    theirs = pm.inspect_notebook(str(path))
    assert list(ours) == list(theirs)
    assert {k: ast.literal_eval(v) for k, v in ours.items()} == {
        k: ast.literal_eval(v["default"]) for k, v in theirs.items()
    }
