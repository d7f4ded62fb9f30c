import itertools
import random

from services.quality.running import RunningAgreement


def brute_force(votes):
    agree = total = 0
    for labels in votes.values():
        for a, b in itertools.combinations(labels.values(), 2):
            total += 1
            agree += a == b
    return agree, total


def test_running_agreement_matches_brute_force_with_revisions():
    rng = random.Random(3)
    running = RunningAgreement()
    truth: dict[str, dict[str, str]] = {}
    for _ in range(2000):
        item, who, label = f"i{rng.randrange(60)}", f"u{rng.randrange(6)}", rng.choice("abc")
        running.add(item, who, label)
        truth.setdefault(item, {})[who] = label
        assert (running.agreeing_pairs, running.total_pairs) == brute_force(truth)


def test_single_labels_have_no_agreement_yet():
    running = RunningAgreement()
    running.add("i1", "u1", "a")
    assert running.agreement is None
    running.add("i1", "u2", "a")
    running.add("i2", "u1", "a")
    running.add("i2", "u2", "b")
    assert running.agreement == 0.5
