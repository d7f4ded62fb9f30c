from services.quality.settlement import settle


def votes():
    return {
        "unanimous": {"a": "cat", "b": "cat", "c": "cat"},
        "majority": {"a": "dog", "b": "dog", "c": "cat"},
        "split": {"a": "cat", "b": "dog"},
        "single": {"a": "cat"},
        **{f"x{i}": {"a": "cat", "b": "cat", "c": "cat"} for i in range(5)},
        **{f"y{i}": {"a": "dog", "b": "dog", "c": "dog"} for i in range(5)},
    }


def test_consensus_for_items_with_two_votes_and_adjudication_for_split_ones():
    out = settle(votes(), published={}, requested=set(), adjudicated={})
    published = {c.item_id: c for c in out.publish}
    assert "single" not in published
    assert published["unanimous"].label == "cat" and published["unanimous"].confidence > 0.9
    assert published["majority"].label == "dog"
    assert all(c.revision == 0 for c in out.publish)
    asked = {r.item_id: r for r in out.adjudicate}
    assert set(asked) == {"split"}
    assert asked["split"].reason == "split_vote"
    assert asked["split"].labels == {"a": "cat", "b": "dog"}
    assert out.labeler_agreement["a"]["agreement_with_consensus"] > 0.8
    assert set(out.confusion["a"]) == {"cat", "dog"}


def test_nothing_is_republished_or_reasked_when_nothing_changed():
    first = settle(votes(), published={}, requested=set(), adjudicated={})
    published = {c.item_id: (c.label, c.revision) for c in first.publish}
    again = settle(votes(), published=published, requested={r.item_id for r in first.adjudicate},
                   adjudicated={})
    assert again.publish == [] and again.adjudicate == []


def test_a_changed_consensus_gets_the_next_revision():
    out = settle(votes(), published={"unanimous": ("dog", 0)}, requested=set(), adjudicated={})
    changed = [c for c in out.publish if c.item_id == "unanimous"]
    assert changed[0].label == "cat" and changed[0].revision == 1


def test_adjudicated_items_are_settled_for_good():
    out = settle(votes(), published={}, requested=set(), adjudicated={"split": "dog"})
    assert "split" not in {c.item_id for c in out.publish}
    assert "split" not in {r.item_id for r in out.adjudicate}


def test_low_posterior_without_split_is_asked_too():
    out = settle(votes(), published={}, requested=set(), adjudicated={}, min_confidence=0.999999)
    reasons = {r.item_id: r.reason for r in out.adjudicate}
    assert reasons["majority"] == "low_posterior"


def test_no_votes_settles_nothing():
    out = settle({}, published={}, requested=set(), adjudicated={})
    assert out.publish == [] and out.adjudicate == []
