from services.quality.alerts import ClassAgreement, GuidelineWatch


def m(value, items=50, cls="cat", version="g1"):
    return ClassAgreement(cls, version, value, items)


def test_alert_names_class_and_version_once_until_it_recovers():
    watch = GuidelineWatch(threshold=0.6, min_items=20, hysteresis=0.05)
    alerts = watch.update([m(0.4), m(0.9, cls="dog")])
    assert [(a.label_class, a.guideline_version) for a in alerts] == [("cat", "g1")]
    assert alerts[0].threshold == 0.6 and alerts[0].items == 50
    assert watch.update([m(0.3)]) == []  # still low: not raised again
    assert watch.update([m(0.62)]) == []  # inside the hysteresis band: still active
    assert watch.update([m(0.7)]) == []  # recovered: re-armed
    assert len(watch.update([m(0.5)])) == 1


def test_too_few_items_or_undefined_agreement_raise_nothing():
    watch = GuidelineWatch(threshold=0.6, min_items=20)
    assert watch.update([m(0.1, items=5), m(float("nan"))]) == []


def test_each_guideline_version_is_its_own_alert():
    watch = GuidelineWatch(threshold=0.6, min_items=1)
    alerts = watch.update([m(0.2, version="g1"), m(0.2, version="g2")])
    assert {a.guideline_version for a in alerts} == {"g1", "g2"}
