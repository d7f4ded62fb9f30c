import pytest

from services.quality.gold import LabelerGold, ModelErrorRate, prelabel_task


def test_prelabel_task_needs_a_shown_prelabel():
    assert prelabel_task("blind", None, "a", False) is None
    assert prelabel_task("prelabel", None, "a", False) is None
    task = prelabel_task("prelabel", "b", "a", True)
    assert task.planted and task.changed


def test_gold_accuracy_catch_and_correction_rates():
    gold = LabelerGold()
    # two planted gold tasks: one caught, one kept
    gold.add(label="cat", gold_label="cat", task=prelabel_task("prelabel", "dog", "cat", True),
             revised_after_reveal=False)
    gold.add(label="dog", gold_label="cat", task=prelabel_task("prelabel", "dog", "dog", True),
             revised_after_reveal=False)
    # three ordinary pre-labels: one changed
    for label in ("a", "a", "b"):
        gold.add(label=label, gold_label=None, task=prelabel_task("prelabel", "a", label, False),
                 revised_after_reveal=label == "b")
    # one blind gold task, right
    gold.add(label="x", gold_label="x", task=None, revised_after_reveal=False)
    assert gold.gold_accuracy == pytest.approx(2 / 3)
    assert gold.gold_catch_rate == 0.5
    assert gold.correction_rate == pytest.approx(1 / 3)
    assert gold.revisions_after_reveal == 1
    summary = gold.summary(model_error_rate=0.25)
    assert summary["correction_to_error_ratio"] == pytest.approx(4 / 3)
    assert summary["labels"] == 6


def test_empty_rates_are_none():
    gold = LabelerGold()
    assert gold.gold_accuracy is None and gold.gold_catch_rate is None
    assert gold.correction_rate is None
    assert gold.catch_rate_below(0.5) == pytest.approx(0.5)


def test_catch_rate_posterior_moves_with_misses():
    gold = LabelerGold()
    for _ in range(10):
        gold.add(label="b", gold_label="a", task=prelabel_task("prelabel", "b", "b", True),
                 revised_after_reveal=False)
    # Beta(1, 11): P(p < 0.5) = 1 - 0.5**11
    assert gold.catch_rate_below(0.5) == pytest.approx(1 - 0.5**11)


def test_model_error_rate_from_gold_and_its_cautious_bound():
    rate = ModelErrorRate()
    for i in range(100):
        rate.add("wrong" if i < 15 else "a", "a")
    rate.add(None, "a")  # no model label: not counted
    assert rate.checked == 100 and rate.errors == 15
    assert rate.mean == pytest.approx(16 / 105)
    assert rate.lower(0.1) < rate.mean < 0.2


def test_a_gold_pre_label_is_known_right_or_wrong_whether_planted_or_the_models_guess():
    from services.quality.detection import Evidence

    assert prelabel_task("prelabel", "b", "b", True, "a").evidence is Evidence.KNOWN_WRONG
    # The model's real guess on a gold item, wrong: as telling as a planted one.
    assert prelabel_task("prelabel", "b", "a", False, "a").evidence is Evidence.KNOWN_WRONG
    assert prelabel_task("prelabel", "a", "a", False, "a").evidence is Evidence.KNOWN_RIGHT
    assert prelabel_task("prelabel", "a", "b", False, None).evidence is Evidence.ORDINARY
