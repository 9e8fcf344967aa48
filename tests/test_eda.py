"""Class, metadata and image-size summaries behind notebook 01."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from skinhelpers.explore import eda


def _tiny():
    df = pd.DataFrame(
        {
            "label": ["a", "a", "a", "a", "b", "c"],
            "group": ["g1", "g1", "g2", "g3", "g4", "g5"],
            "age": [30, 40, np.nan, 50, 70, 80],
            "sex": ["male", "female", "unknown", "male", None, "female"],
            "localization": ["back"] * 6,
            "dx_type": ["histo", "follow_up", "follow_up", "histo", "histo", "consensus"],
        }
    )
    df.attrs["classes"] = ["a", "b", "c", "d"]
    return df


def test_class_table_and_imbalance():
    df = _tiny()
    t = eda.class_table(df)
    assert t.loc["a", "images"] == 4 and t.loc["a", "groups"] == 3
    assert t.loc["d", "images"] == 0  # classes without images are listed
    assert t.loc["total", "images"] == 6 and t.loc["total", "groups"] == 5
    assert t.loc[["a", "b", "c", "d"], "share"].sum() == pytest.approx(1.0)
    assert eda.imbalance_ratio(df) == pytest.approx(4.0)  # empty classes do not count


def test_imbalance_of_real_ham(ham_manifest):
    assert eda.imbalance_ratio(ham_manifest) == pytest.approx(6705 / 115)
    t = eda.class_table(ham_manifest)
    assert t.loc["total", "images"] == 10015
    # groups join byte-identical files to lesions: never more groups than lesions
    assert t.loc["total", "groups"] <= 7470


def test_unknown_counts_as_missing():
    s = eda.clean_category(pd.Series(["male", " unknown ", "", None, np.nan, "female "]))
    assert s.tolist()[0] == "male" and s.tolist()[-1] == "female"
    assert s.isna().tolist() == [False, True, True, True, True, False]


def test_available_metadata(ham_manifest, isic9_manifest):
    assert eda.available_metadata(ham_manifest) == ["age", "sex", "localization", "dx_type"]
    assert eda.available_metadata(isic9_manifest) == []
    df = _tiny().drop(columns="dx_type")
    df["sex"] = "unknown"
    assert eda.available_metadata(df) == ["age", "localization"]


def test_metadata_overview_names_missing_columns():
    df = _tiny().drop(columns="localization")
    o = eda.metadata_overview(df).set_index("column")
    assert o.loc["localization", "known"] == 0
    assert "not in this dataset" in o.loc["localization", "most_common"]
    assert o.loc["sex", "known"] == 4 and o.loc["sex", "missing_share"] == pytest.approx(2 / 6)
    assert o.loc["age", "known"] == 5


def test_category_share_rows_sum_to_one():
    ct = eda.category_share(_tiny(), "sex")
    assert list(ct.index) == ["a", "b", "c"]
    assert np.allclose(ct.sum(axis=1), 1.0)
    assert ct.columns[-1] == "unknown"
    assert ct.loc["b", "unknown"] == 1.0
    top = eda.category_share(_tiny(), "dx_type", top=1)
    assert "other" in top.columns and "histo" in top.columns


def test_age_by_class():
    a = eda.age_by_class(_tiny())
    assert a.loc["a", "n"] == 3 and a.loc["a", "missing"] == 1
    assert a.loc["a", "median"] == 40


def test_dx_type_follow_up_only_for_nevi_in_ham(ham_manifest):
    ct = eda.category_share(ham_manifest, "dx_type")
    assert ct.loc["nv", "follow_up"] > 0.5
    assert (ct.drop(index="nv")["follow_up"] == 0).all()
    assert ct.loc["mel", "histo"] == 1.0


def test_image_size_stats_and_counts():
    info = pd.DataFrame(
        {
            "ok": [True, True, True, False],
            "width": [200, 200, 600, None],
            "height": [150, 150, 450, None],
        }
    )
    s = eda.image_size_stats(info)
    assert s.loc["width", "count"] == 3
    assert s.loc["aspect", "min"] == pytest.approx(4 / 3)
    c = eda.size_counts(info)
    assert c.index[0] == "200 x 150" and c["images"].iloc[0] == 2
    assert c["share"].sum() == pytest.approx(1.0)


def test_plots_return_figures(ham_manifest):
    df = ham_manifest.sample(400, random_state=0)
    df.attrs = dict(ham_manifest.attrs)
    info = pd.DataFrame({"ok": True, "width": 200, "height": 150}, index=range(5))
    figs = [
        eda.plot_age_by_class(df),
        eda.plot_category_by_class(df, "sex"),
        eda.plot_category_by_class(df, "localization"),
        eda.plot_image_sizes(info),
    ]
    for f in figs:
        assert f.axes
        plt.close(f)


def test_seaborn_heatmap_and_box_plot_show_the_table_values(ham_manifest):
    df = ham_manifest.sample(600, random_state=1)
    df.attrs = dict(ham_manifest.attrs)
    fig = eda.plot_category_by_class(df, "localization")  # > 6 values: the heatmap
    ct = eda.category_share(df, "localization", top=12)
    texts = [t.get_text() for t in fig.axes[0].texts]
    want = [f"{v:.0%}" if v >= 0.01 else "" for v in ct.to_numpy().ravel()]
    assert texts == want
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0].startswith(ct.index[0])
    plt.close(fig)
    fig = eda.plot_age_by_class(df)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    n = pd.to_numeric(df["age"], errors="coerce").groupby(df["label"]).count()
    assert labels == [f"{c}\n(n={n[c]})" for c in eda._classes(df)]
    plt.close(fig)
