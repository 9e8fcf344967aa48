"""A metadata model: what age, sex and body site alone say about the diagnosis.

A class-balanced multinomial logistic regression (scikit-learn) on the patient metadata
of the training split: age (median-imputed, with a missing flag), sex and localization
(one-hot; unseen or missing values fall in no column). It is fitted on the training
split only and fused with the image model late (:mod:`skinhelpers.evaluate.decision`).

``dx_type`` is never a feature: it records how the diagnosis was confirmed
(histopathology for most melanomas, follow-up for naevi) and so leaks the label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

log = logging.getLogger(__name__)

NUMERIC = ("age",)
CATEGORICAL = ("sex", "localization")
FORBIDDEN = ("dx_type", "dx", "label", "label_idx", "lesion_id", "group")
UNKNOWN = {"", "unknown", "nan", "none"}


def metadata_columns(df: pd.DataFrame) -> list[str]:
    """The metadata columns of ``df`` that carry information (not all missing)."""
    cols = []
    for c in (*NUMERIC, *CATEGORICAL):
        if c in df and _clean(df[c], c in NUMERIC).notna().any():
            cols.append(c)
    return cols


def _clean(s: pd.Series, numeric: bool) -> pd.Series:
    if numeric:
        return pd.to_numeric(s, errors="coerce")
    s = s.astype("string").str.strip().str.lower()
    s = s.mask(s.isin(UNKNOWN)).astype(object)
    return s.where(s.notna(), np.nan)  # scikit-learn's imputer wants NaN, not pd.NA


def features(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The feature frame of ``columns`` (cleaned: "unknown" and blanks are missing)."""
    bad = sorted(set(columns) & set(FORBIDDEN))
    if bad:
        raise ValueError(f"{bad} must not be metadata features (they leak the label)")
    missing = [c for c in columns if c not in df]
    if missing:
        raise ValueError(f"metadata column(s) {missing} are not in the frame")
    return pd.DataFrame({c: _clean(df[c], c in NUMERIC) for c in columns}, index=df.index)


def fit_metadata_model(
    train: pd.DataFrame,
    labels,
    num_classes: int,
    columns: Sequence[str] | None = None,
    seed: int = 0,
) -> Pipeline | None:
    """A class-balanced logistic regression on the training split's metadata, or None
    when the dataset has no metadata (folder datasets). ``labels`` are class indices."""
    columns = list(columns) if columns is not None else metadata_columns(train)
    if not columns:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    num = [c for c in columns if c in NUMERIC]
    cat = [c for c in columns if c not in NUMERIC]
    pre = ColumnTransformer(
        [
            *(
                [
                    (
                        "num",
                        make_pipeline(
                            SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
                        ),
                        num,
                    )
                ]
                if num
                else []
            ),
            *(
                [
                    (
                        "cat",
                        make_pipeline(
                            SimpleImputer(strategy="constant", fill_value="missing"),
                            OneHotEncoder(handle_unknown="ignore"),
                        ),
                        cat,
                    )
                ]
                if cat
                else []
            ),
        ]
    )
    model = Pipeline(
        [
            ("features", pre),
            (
                "clf",
                LogisticRegression(
                    C=1.0, class_weight="balanced", max_iter=2000, random_state=seed
                ),
            ),
        ]
    )
    model.fit(features(train, columns), labels)
    model.columns_ = columns
    model.num_classes_ = num_classes
    return model


def predict_metadata(model: Pipeline, df: pd.DataFrame) -> np.ndarray:
    """Class probabilities ``(n, num_classes)``; a class absent from training gets 0."""
    p = model.predict_proba(features(df, model.columns_))
    out = np.zeros((len(df), model.num_classes_), dtype=np.float64)
    out[:, model.classes_] = p
    return out
