"""Per-project models: a scikit-learn logistic-regression pipeline over features or text."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass
class TrainedModel:
    version: str
    pipeline: Pipeline
    kind: str  # "features" or "text"
    n_features: int | None

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.pipeline.classes_]

    def predict_proba(self, inputs: Sequence[Any] | np.ndarray) -> np.ndarray:
        return self.pipeline.predict_proba(inputs)


def build_pipeline(kind: str) -> Pipeline:
    if kind == "text":
        return make_pipeline(
            TfidfVectorizer(min_df=1, ngram_range=(1, 2)), LogisticRegression(max_iter=2000)
        )
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def fit(version: str, inputs: Sequence[Any] | np.ndarray, labels: Sequence[str] | np.ndarray,
        kind: str) -> TrainedModel:
    """Fit on the current labels; needs at least two classes to say anything."""
    if len(set(labels)) < 2:
        raise ValueError("training needs labels of at least two classes")
    pipeline = build_pipeline(kind)
    x = inputs if kind == "text" else np.asarray(inputs, dtype=np.float64)
    pipeline.fit(x, np.asarray(labels, dtype=object))
    n_features = None if kind == "text" else int(np.asarray(x).shape[1])
    return TrainedModel(version, pipeline, kind, n_features)


def dumps(model: TrainedModel) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(
        {"pipeline": model.pipeline, "kind": model.kind, "n_features": model.n_features}, buffer
    )
    return buffer.getvalue()


def loads(version: str, blob: bytes) -> TrainedModel:
    data = joblib.load(io.BytesIO(blob))
    return TrainedModel(version, data["pipeline"], data["kind"], data["n_features"])
