import numpy as np
import pytest
from sklearn.datasets import load_digits

from services.scorer.model import dumps, fit, loads


def test_fit_predicts_a_distribution_over_string_classes_and_survives_serialisation():
    x, y = load_digits(return_X_y=True)
    model = fit("v1", x[:300].tolist(), [str(v) for v in y[:300]], "features")
    assert model.classes == [str(c) for c in range(10)]
    probs = model.predict_proba(x[300:310])
    assert probs.shape == (10, 10) and np.allclose(probs.sum(axis=1), 1)
    again = loads("v1", dumps(model))
    assert np.allclose(again.predict_proba(x[300:310]), probs)


def test_text_models_work_too():
    texts = ["great film", "awful film", "great acting", "awful plot"] * 3
    labels = ["pos", "neg", "pos", "neg"] * 3
    model = fit("t1", texts, labels, "text")
    assert model.predict_proba(["great"])[0][model.classes.index("pos")] > 0.5


def test_one_class_cannot_train():
    with pytest.raises(ValueError, match="two classes"):
        fit("v", [[1.0], [2.0]], ["a", "a"], "features")
