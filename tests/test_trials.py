"""Model-trial selection (notebook 06): train/trials.choose_best and best_config.json."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinhelpers.train import trials


def _table(rows: list[tuple]) -> pd.DataFrame:
    """(trial, params_m, balanced_accuracy, ema_balanced_accuracy) rows, as run_trials
    writes them (other columns filled in)."""
    df = pd.DataFrame(
        rows, columns=["trial", "params_m", "balanced_accuracy", "ema_balanced_accuracy"]
    )
    df["pretrained"], df["frozen"] = True, False
    df["macro_f1"], df["macro_auc"] = 0.5, 0.8
    df["status"] = np.where(
        df["balanced_accuracy"].isna() & df["ema_balanced_accuracy"].isna(),
        "skipped: no weights",
        "done",
    )
    return df.reindex(columns=trials.TRIAL_COLUMNS + ["status"])


def test_best_score_wins_whatever_the_size():
    t = _table(
        [
            ("small_cnn", 1.2, 0.50, 0.52),
            ("resnet50", 23.5, 0.61, 0.60),
            ("efficientnet_lite0", 3.4, 0.58, 0.59),
        ]
    )
    assert trials.choose_best(t)["trial"] == "resnet50"


def test_equal_scores_go_to_the_smaller_model_in_any_order():
    rows = [
        ("resnet50", 23.5, 0.60, 0.55),
        ("efficientnet_lite0", 3.4, 0.60, 0.58),
        ("resnet18", 11.2, 0.60, 0.59),
    ]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        best = trials.choose_best(_table([rows[i] for i in order]))
        assert best["trial"] == "efficientnet_lite0"
        assert "_score" not in best.index  # the helper column does not leak out


def test_the_ema_score_counts_and_ties_with_a_plain_score():
    # plain 0.55 but EMA 0.70 beats plain 0.65 without EMA
    t = _table([("a", 5.0, 0.65, np.nan), ("b", 9.0, 0.55, 0.70)])
    assert trials.choose_best(t)["trial"] == "b"
    # a tie between one trial's EMA and another's plain score: fewer parameters again
    t = _table([("big", 9.0, 0.70, 0.60), ("small", 2.0, 0.60, 0.70)])
    assert trials.choose_best(t)["trial"] == "small"


def test_skipped_trials_with_nan_scores_never_win():
    t = _table(
        [
            ("resnet50_frozen", np.nan, np.nan, np.nan),  # no weights offline
            ("small_cnn", 1.2, 0.31, 0.30),
            ("tiny", 0.1, np.nan, np.nan),
        ]
    )
    best = trials.choose_best(t)
    assert best["trial"] == "small_cnn" and best["status"] == "done"
    # a NaN plain score with a valid EMA score is ranked by the EMA score
    t = _table([("a", 1.0, np.nan, 0.40), ("b", 1.0, 0.35, np.nan)])
    assert trials.choose_best(t)["trial"] == "a"


def test_other_monitor_without_an_ema_column():
    t = _table([("a", 1.0, 0.9, 0.9), ("b", 2.0, 0.1, 0.1)]).drop(columns="ema_balanced_accuracy")
    t["macro_f1"] = [0.40, 0.45]
    assert trials.choose_best(t, monitor="macro_f1")["trial"] == "b"
    assert trials.choose_best(t, monitor="balanced_accuracy")["trial"] == "a"


def test_no_trials_is_an_error():
    with pytest.raises(ValueError, match="no trials"):
        trials.choose_best(_table([]))


def test_all_trials_skipped_is_an_error():
    t = _table([("resnet50_frozen", np.nan, np.nan, np.nan), ("x", 2.0, np.nan, np.nan)])
    with pytest.raises(ValueError, match="no trial finished"):
        trials.choose_best(t)


def test_best_config_round_trip(tmp_path):
    t = _table([("efficientnet_lite0:frozen", 3.4, 0.61, 0.62), ("small_cnn", 1.2, 0.5, 0.5)])
    best = trials.choose_best(t)
    trials.save_best_config(tmp_path, best, {"epochs": 2, "lr": 1e-3}, 64, "balanced_accuracy")
    cfg = trials.read_best_config(tmp_path)
    assert cfg["arch"] == "efficientnet_lite0" and cfg["variant"] == "efficientnet_lite0:frozen"
    assert cfg["val_score"] == pytest.approx(0.61)  # the monitor column, as saved
    assert cfg["image_size"] == 64 and cfg["recipe"] == {"epochs": 2, "lr": 1e-3}
    with pytest.raises(FileNotFoundError, match="run notebook 06"):
        trials.read_best_config(tmp_path / "elsewhere")
