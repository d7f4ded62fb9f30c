from services.router.gold import GoldItem, GoldPrediction, gold_showing
from services.router.routing import margin, present, route, uncertainty
from shared.events import NONE_OF_THESE, PredictionEvent
from shared.projects import RoutingPolicy


def _pred(probs, priority=None, item="1"):
    return PredictionEvent(project="p", item_id=item, model_version="m", probs=probs,
                           priority=priority)


def test_confident_prediction_is_auto_accepted():
    d = route(_pred({"3": 0.91, "8": 0.09}), 0.9)
    assert d.auto_accept and d.label == "3" and d.confidence == 0.91 and not d.audit


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


def test_uncertainty_and_margin():
    assert abs(uncertainty({"a": 0.25, "b": 0.75}) - 0.25) < 1e-12
    assert abs(margin({"a": 0.5, "b": 0.3, "c": 0.2}) - 0.2) < 1e-12


def test_audit_share_of_confident_predictions_is_stable_and_near_the_rate():
    preds = [_pred({"a": 0.99, "b": 0.01}, item=str(i)) for i in range(20_000)]
    audits = [route(p, 0.9, audit_rate=0.02).audit for p in preds]
    assert 0.015 < sum(audits) / len(audits) < 0.025
    assert audits == [route(p, 0.9, audit_rate=0.02).audit for p in preds]  # redelivery: same
    assert not any(route(p, 0.9, audit_rate=0.02).auto_accept for p, a in zip(preds, audits,
                                                                                strict=True) if a)


def test_presentation_modes():
    options = ["a", "b", "c", "d"]
    blind = present(RoutingPolicy(), {"a": 0.5, "b": 0.3, "c": 0.2}, options, audit=False)
    assert (blind.mode, blind.prelabel, blind.options) == ("blind", None, options)
    pre = present(RoutingPolicy(mode="prelabel"), {"a": 0.5, "b": 0.5}, options, audit=False)
    assert pre.mode == "prelabel" and pre.prelabel in ("a", "b")
    choice = present(RoutingPolicy(choice_margin=0.1, choice_top_k=2),
                     {"a": 0.4, "b": 0.35, "c": 0.25}, options, audit=False)
    assert choice.mode == "choice" and choice.options == ["a", "b", NONE_OF_THESE]
    audited = present(RoutingPolicy(mode="prelabel"), {"a": 0.99, "b": 0.01}, options, audit=True)
    assert audited.mode == "blind" and audited.prelabel is None


def test_gold_prelabels_are_planted_wrong_at_the_configured_share():
    import random

    rng = random.Random(1)
    item = GoldItem(item_id="g", label="cat")
    options = ["bird", "cat", "dog"]
    policy = RoutingPolicy(mode="prelabel", gold_planted_share=0.5)
    shown = [gold_showing(item, policy, options, rng) for _ in range(4000)]
    planted = [s for s in shown if s.planted]
    assert 0.45 < len(planted) / len(shown) < 0.55
    assert all(s.prelabel != "cat" for s in planted)
    assert all(s.prelabel == "cat" for s in shown if not s.planted)
    # No prediction known: nothing of the model is recorded, and never a made-up number.
    assert all(s.model_label is None and s.confidence is None for s in shown)
    blind = gold_showing(item, RoutingPolicy(mode="blind"), options, rng)
    assert blind.prelabel is None and blind.mode == "blind"


def test_a_gold_task_is_shown_like_a_task_routed_from_the_same_prediction():
    """Same mode, options and pre-label as routing would give that prediction (the
    planted share apart), and the model's real label, confidence and version recorded."""
    import random

    rng = random.Random(2)
    options = ["bird", "cat", "dog"]
    probs = {"bird": 0.1, "cat": 0.3, "dog": 0.6}
    item = GoldItem(item_id="g", label="cat",
                    prediction=GoldPrediction(model_version="m7", probs=probs))
    for policy in (RoutingPolicy(mode="prelabel", gold_planted_share=0.0),
                   RoutingPolicy(mode="blind"),
                   RoutingPolicy(mode="prelabel", choice_margin=0.5, gold_planted_share=0.0)):
        routed = present(policy, probs, options, audit=False)
        gold = gold_showing(item, policy, options, rng)
        assert (gold.mode, gold.options, gold.prelabel) == (
            routed.mode, routed.options, routed.prelabel)
        assert (gold.model_label, gold.confidence, gold.model_version) == ("dog", 0.6, "m7")
        assert not gold.planted
    planted = gold_showing(item, RoutingPolicy(mode="prelabel", gold_planted_share=1.0),
                           options, rng)
    assert planted.planted and planted.prelabel != "cat" and planted.model_label == "dog"


def test_items_selected_for_review_are_never_auto_accepted():
    p = PredictionEvent(project="p", item_id="1", model_version="m", probs={"a": 0.99, "b": 0.01},
                        review=True, priority=0.3)
    d = route(p, 0.9)
    assert not d.auto_accept and d.priority == 0.3
