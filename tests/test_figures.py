"""figures.synthetic_title: the one SYNTHETIC marker of titles, captions and tables."""

import matplotlib
import pandas as pd

from skinhelpers import figures
from skinhelpers.explore import eda
from skinhelpers.train import plots

matplotlib.use("Agg")


def test_synthetic_title_from_a_flag_or_a_frame():
    df = pd.DataFrame({"a": [1]})
    assert figures.synthetic_title("T", df) == "T"
    df.attrs["synthetic"] = True
    assert figures.synthetic_title("T", df) == "T  [SYNTHETIC]"
    assert figures.synthetic_title("T", True) == "T  [SYNTHETIC]"
    assert figures.synthetic_title("T", None) == "T"
    assert figures.table(df, "Counts", synthetic=df).caption == "Counts  [SYNTHETIC]"


def test_plots_of_each_stage_use_the_marker():
    df = pd.DataFrame({"label": ["a", "b", "a"], "age": [30.0, 50.0, 40.0]})
    df.attrs.update(synthetic=True, classes=["a", "b"])
    assert eda.plot_age_by_class(df)._suptitle.get_text() == "Age  [SYNTHETIC]"
    hist = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.9]})
    fig = plots.plot_trial_curves(
        {"m": hist.assign(val_balanced_accuracy=[0.3, 0.4])}, synthetic=True
    )
    assert any(ax.get_title().endswith("[SYNTHETIC]") for ax in fig.axes)
