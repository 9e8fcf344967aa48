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


def test_save_figure_writes_into_the_run_folder_and_copies_the_latest(tmp_path, monkeypatch):
    """Each run keeps its own figures (a later run never overwrites them); figures/<dataset>/
    holds the latest copy of each, naming its run; without a run, only figures/<dataset>/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    monkeypatch.setattr(figures, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(figures, "_RUN_DIR", None)
    first, second = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    for run, colour in ((first, "red"), (second, "blue")):
        figures.set_run_dir(run)
        fig, ax = plt.subplots()
        ax.set_facecolor(colour)
        out = figures.save_figure(fig, "demo", "01_class_counts", synthetic=True)
        plt.close(fig)
        assert out == run / "figures" / "01_class_counts.png"
    a, b = (r / "figures" / "01_class_counts.png" for r in (first, second))
    latest = tmp_path / "figures" / "demo" / "01_class_counts.png"
    assert a.read_bytes() != b.read_bytes() and latest.read_bytes() == b.read_bytes()
    assert str(second) in Image.open(latest).text["Source"]
    figures.set_run_dir(None)
    fig, _ = plt.subplots()
    assert figures.save_figure(fig, "demo", "x", run_dir=first) == first / "figures" / "x.png"
    assert figures.save_figure(fig, "demo", "y") == tmp_path / "figures" / "demo" / "y.png"
    plt.close(fig)


def test_show_displays_the_saved_png_once_under_the_inline_backend(tmp_path, monkeypatch):
    """In a notebook the saved PNG itself is shown (at the inline backend's size) and the
    figure closed, so the inline backend does not draw it again; elsewhere plt.show()."""
    import IPython.display
    import matplotlib.pyplot as plt

    monkeypatch.setattr(figures, "PROJECT_ROOT", tmp_path)
    shown, plain = [], []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(plt, "show", lambda: plain.append(1))

    fig = plt.figure(figsize=(2, 1), dpi=100)
    monkeypatch.setattr(plt, "get_backend", lambda: "module://matplotlib_inline.backend_inline")
    out = figures.show(fig, "t", "f", dpi=200, run_dir=tmp_path / "run")
    assert out == tmp_path / "run" / "figures" / "f.png" and out.exists()
    (img,) = shown
    assert img.data == out.read_bytes() and img.format == "png"
    from PIL import Image

    assert img.width == round(Image.open(out).size[0] * 100 / 200)  # the inline size
    assert not plt.fignum_exists(fig.number) and not plain

    fig = plt.figure(figsize=(2, 1))
    monkeypatch.setattr(plt, "get_backend", lambda: "agg")
    figures.show(fig, "t", "g", run_dir=tmp_path / "run")
    assert len(shown) == 1 and plain == [1] and plt.fignum_exists(fig.number)
    plt.close(fig)
