"""Run profiles and where a parameter's value comes from.

Precedence, lowest first: the TrainConfig default < the profile < ``-p NAME VALUE`` on
the command line. A parameter that neither the profile nor the command line sets keeps
the notebook's own default (its ``parameters`` cell), which is also what a notebook run
alone in Jupyter uses. The pipeline's per-notebook plan is checked with papermill's
execution replaced by a recorder: no notebook runs here.
"""

from __future__ import annotations

import copy
import json
from dataclasses import fields

import nbformat
import papermill
import pytest

from skinhelpers.model.factory import parse_variant
from skinhelpers.run import pipeline, profiles
from skinhelpers.train.config import TrainConfig
from skinhelpers.train.experiment import make_config

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


# --------------------------------------------------------------------------- resolve


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown profile 'fast'.*\['cpu', 'gpu', 'smoke'\]"):
        profiles.resolve("fast")


def test_overrides_win_and_the_profile_is_recorded():
    p = profiles.resolve("cpu", {"epochs": 3, "lr": 5e-4, "new_key": "x"})
    assert p["epochs"] == 3 and p["lr"] == 5e-4 and p["new_key"] == "x"
    assert p["profile"] == "cpu" and p["image_size"] == profiles.PROFILES["cpu"]["image_size"]
    assert profiles.resolve("cpu", None) == profiles.resolve("cpu", {})
    assert profiles.resolve("cpu")["epochs"] == profiles.PROFILES["cpu"]["epochs"]


def test_resolve_does_not_change_the_profiles():
    before = copy.deepcopy(profiles.PROFILES)
    p = profiles.resolve("smoke", {"epochs": 99})
    p["image_size"] = 1
    assert profiles.PROFILES == before


@pytest.mark.parametrize("name", sorted(profiles.PROFILES))
def test_every_profile_makes_valid_training_configs(name):
    """Notebook 07's recipe and notebook 06's trial recipe build a checked TrainConfig."""
    p = profiles.resolve(name)
    recipe = {k: v for k, v in p.items() if k in TRAIN_FIELDS}
    recipe["arch"] = p.get("arch") or TrainConfig.arch  # "" in a profile: 06's winner
    cfg = make_config(recipe)  # runs TrainConfig.check()
    for key, value in recipe.items():
        assert getattr(cfg, key) == value, (name, key)
    assert p["trial_models"], f"profile {name} has no trial models"
    for label in p["trial_models"]:
        parse_variant(label)
        trial = make_config(
            {
                "epochs": p["trial_epochs"],
                "freeze_epochs": p["trial_freeze_epochs"],
                "batch_size": p["trial_batch_size"],
                "monitor": p.get("monitor", TrainConfig.monitor),
            },
            arch=label,
        )
        assert trial.arch == label and trial.epochs == p["trial_epochs"]


def test_every_profile_key_is_a_parameter_of_some_notebook():
    """A profile key no notebook declares would be dropped silently (a typo)."""
    declared = set()
    for nb in pipeline.numbered_notebooks():
        declared |= set(pipeline.declared_parameters(nb))
    for name in profiles.PROFILES:
        stray = sorted(set(profiles.resolve(name)) - declared)
        assert not stray, f"profile {name}: {stray} not declared by any notebook"


# --------------------------------------------------------------------------- TrainConfig


def test_trainconfig_default_then_recipe_then_overrides():
    augmentation = {"cutmix_alpha": 1.0, "mixup_alpha": 0.2, "mix_prob": 0.5}
    recipe = {k: v for k, v in profiles.resolve("cpu").items() if k in TRAIN_FIELDS}
    recipe["arch"] = "efficientnet_lite0"
    recipe["mixup_alpha"] = 0.0  # the recipe beats augmentation.json
    cfg = make_config(recipe, augmentation, scheduler="plateau", epochs=4, lr=None)
    assert cfg.scheduler == "plateau" and cfg.epochs == 4  # overrides beat the recipe
    assert cfg.lr == recipe.get("lr", TrainConfig.lr)  # None in the overrides: not set
    # the profile lists only what it changes, and what it lists beats the default
    assert "balance_power" not in recipe and cfg.balance_power == TrainConfig.balance_power
    assert cfg.patience == recipe["patience"] != TrainConfig.patience
    assert cfg.torch_compile is True and TrainConfig.torch_compile is False
    # a checkpoint's config written before the rename reads as the new field
    assert TrainConfig.from_dict({"compile": True}).torch_compile is True
    assert cfg.min_lr == TrainConfig.min_lr and cfg.ema_decay == TrainConfig.ema_decay
    assert (cfg.cutmix_alpha, cfg.mixup_alpha, cfg.mix_prob) == (1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['epoch'\]"):
        make_config(recipe, epoch=3)


# --------------------------------------------------------------------------- the pipeline


def test_command_line_values_are_python_literals_where_they_parse():
    assert pipeline.parse_value("5") == 5 and pipeline.parse_value("0.5") == 0.5
    assert pipeline.parse_value("True") is True and pipeline.parse_value("[1, 2]") == [1, 2]
    assert pipeline.parse_value("resnet18:scratch") == "resnet18:scratch"
    assert pipeline.parse_value("") == ""


def _notebook(path, params: str):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("pass")]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture()
def plan(tmp_path, monkeypatch):
    """Toy notebooks; ``plan(argv)`` runs pipeline.main and returns {notebook: parameters}
    as papermill would have received them."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(
        nbs / "01_prep.ipynb",
        'dataset = "demo"\nrun_dir = ""\nimage_size = 128\n'
        'max_images = 0\nonly_in_notebook = "nb-default"',
    )
    _notebook(
        nbs / "07_train.ipynb",
        'run_dir = ""\nimage_size = 64\nepochs = 1\nlr = 0.1\nprofile = "smoke"\noverrides = {}'
        '\nnnodes = 1\nnode_rank = 0\nrdzv_endpoint = ""',
    )
    _notebook(nbs / "08_eval.ipynb", 'run_dir = ""')
    monkeypatch.setenv("SKINHELPERS_NOTEBOOK_DIR", str(nbs))
    calls = {}

    def record(input_path, output_path, parameters=None, **kwargs):
        calls[input_path.rsplit("/", 1)[-1]] = dict(parameters)

    monkeypatch.setattr(papermill, "execute_notebook", record)

    def run(argv):
        calls.clear()
        assert pipeline.main(["--run", str(tmp_path / "run"), "--no-html", *argv]) == 0
        return dict(calls)

    return run


def test_profile_values_reach_the_notebooks_that_declare_them(plan):
    got = plan(["--profile", "cpu"])
    cpu = profiles.PROFILES["cpu"]
    assert got["01_prep.ipynb"]["image_size"] == cpu["image_size"]  # not the notebook's 128
    assert got["07_train.ipynb"] == {
        "run_dir": got["07_train.ipynb"]["run_dir"],
        "image_size": cpu["image_size"],
        "epochs": cpu["epochs"],
        "profile": "cpu",
    }  # lr: the cpu profile keeps the library default, so the notebook keeps its own
    assert "max_images" not in got["07_train.ipynb"]  # only what a notebook declares


def test_command_line_beats_the_profile_and_unset_keeps_the_notebook_default(plan, tmp_path):
    got = plan(
        [
            "--profile",
            "smoke",
            "-p",
            "epochs",
            "7",
            "-p",
            "lr",
            "2e-4",
            "-p",
            "overrides",
            "{'scheduler': 'plateau'}",
        ]
    )
    nb7 = got["07_train.ipynb"]
    assert nb7["epochs"] == 7 and nb7["lr"] == 2e-4  # -p beats the profile (2, 1e-3)
    assert nb7["overrides"] == {"scheduler": "plateau"}
    assert got["01_prep.ipynb"]["max_images"] == profiles.PROFILES["smoke"]["max_images"]
    # neither profile nor command line sets it: the notebook keeps its own default
    assert "only_in_notebook" not in got["01_prep.ipynb"]
    assert "dataset" in got["01_prep.ipynb"] and "dataset" not in nb7
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["parameters"]["epochs"] == 7 and record["profile"] == "smoke"


def test_a_command_line_key_no_notebook_declares_is_refused(plan):
    with pytest.raises(SystemExit, match=r"\['epoch'\] are not declared"):
        plan(["-p", "epoch", "3"])


def test_several_machines_reach_notebook_07_and_a_worker_node_runs_only_the_data_and_07(plan):
    """run_all.sh --nnodes/--node-rank/--rdzv-endpoint are notebook 07's launch parameters;
    node 0 runs everything, another node the data chapters and 07 (the trials and the
    evaluation are node 0's); bad combinations are refused before anything runs."""
    nodes = ["--nnodes", "2", "--rdzv-endpoint", "10.0.0.1:29500"]
    got = plan([*nodes, "--node-rank", "0"])
    assert set(got) == {"01_prep.ipynb", "07_train.ipynb", "08_eval.ipynb"}
    want = {"nnodes": 2, "node_rank": 0, "rdzv_endpoint": "10.0.0.1:29500"}
    assert want.items() <= got["07_train.ipynb"].items()
    got = plan([*nodes, "--node-rank", "1"])
    assert set(got) == {"01_prep.ipynb", "07_train.ipynb"}  # 08 skipped on node 1
    assert got["07_train.ipynb"]["node_rank"] == 1
    assert "nnodes" not in plan([])["07_train.ipynb"]  # one machine: the notebook's default
    for bad in (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"], ["--nnodes", "2"]):
        assert pipeline.main(["--no-html", *bad]) == 2
