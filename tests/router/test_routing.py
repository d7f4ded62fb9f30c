from services.router.routing import route, uncertainty
from shared.events import PredictionEvent


def _pred(probs, priority=None):
    return PredictionEvent(project="p", item_id="1", model_version="m", probs=probs,
                           priority=priority)


def test_confident_prediction_is_auto_accepted():
    d = route(_pred({"3": 0.91, "8": 0.09}), 0.9)
    assert d.auto_accept and d.label == "3" and d.confidence == 0.91


def test_threshold_is_inclusive_and_below_goes_to_review():
    assert route(_pred({"a": 0.9, "b": 0.1}), 0.9).auto_accept
    d = route(_pred({"a": 0.6, "b": 0.4}), 0.9)
    assert not d.auto_accept
    assert abs(d.priority - 0.4) < 1e-12


def test_no_model_means_review_with_top_priority():
    d = route(_pred({}), 0.0)
    assert not d.auto_accept and d.priority == 1.0


def test_scorer_priority_overrides_uncertainty():
    assert route(_pred({"a": 0.6, "b": 0.4}, priority=7.5), 0.9).priority == 7.5


def test_uncertainty_is_least_confidence():
    assert abs(uncertainty({"a": 0.25, "b": 0.75}) - 0.25) < 1e-12
