"""Incremental Dawid-Skene: the consensus kept up to date from the touched items matches
a full refit on all but a small share of items, and its running totals are exact."""

from __future__ import annotations

import numpy as np

from bench.quality import simulate_crowd
from services.quality.consensus import incidence
from services.quality.incremental import IncrementalDawidSkene
from services.quality.settlement import _agreement_with_consensus
from services.quality.votes import VoteTable


def arriving(n_votes: int, seed: int = 5) -> list[tuple[str, str, str]]:
    """A crowd's votes as they arrive: items in order, an item's votes a few thousand
    votes apart."""
    crowd = simulate_crowd(n_votes // 3 + 1, seed=seed)
    rng = np.random.default_rng(seed)
    order = np.argsort(np.arange(len(crowd.item)) + rng.integers(0, 3000, len(crowd.item)),
                       kind="stable")[:n_votes]
    return [(f"i{i}", f"u{w}", str(c)) for i, w, c in zip(
        crowd.item[order].tolist(), crowd.labeler[order].tolist(), crowd.label[order].tolist(),
        strict=True)]


def feed(table: VoteTable, votes: list[tuple[str, str, str]]) -> np.ndarray:
    return np.unique([table.put(i, w, c, 0.0, None).item for i, w, c in votes])


def test_incremental_consensus_stays_within_half_a_percent_of_a_full_refit():
    """100,000 votes: a full fit on the first half, then bursts of 1,000 votes updated
    incrementally, with a warm-started full refit whenever one is due. Just before each
    refit (the most stale moment) the consensus of at most 1% of the items with two or
    more votes differs from the refit's; measured 0.54% at worst. For scale: two full
    refits 1,000 votes apart differ on 0.35% of the older items."""
    votes = arriving(100_000)
    table, engine = VoteTable(), IncrementalDawidSkene()
    feed(table, votes[:50_000])
    engine.adopt(engine.refit_job(table).run(), table)
    worst = 0.0
    for start in range(50_000, len(votes), 1000):
        engine.update(table, feed(table, votes[start:start + 1000]))
        last = start + 1000 >= len(votes)
        if engine.refit_due() or last:
            n = table.n_items
            settled = table.item_size[:n] >= 2
            before = engine.labels(np.arange(n))
            engine.adopt(engine.refit_job(table).run(), table)
            after = engine.labels(np.arange(n))
            worst = max(worst, float(np.mean((before != after)[settled])))
    assert engine.refits > 5
    assert worst <= 0.01


def test_the_running_statistics_equal_a_recount():
    votes = arriving(12_000, seed=2)
    table, engine = VoteTable(), IncrementalDawidSkene()
    feed(table, votes[:6000])
    engine.adopt(engine.refit_job(table).run(), table)
    engine.set_adjudicated(table.items.index[votes[0][0]], table.classes.index["1"])
    engine.update(table, np.array([table.items.index[votes[0][0]]]))
    for start in range(6000, 12_000, 500):
        batch = votes[start:start + 500]
        batch += [(votes[start - 4000][0], votes[start - 4000][1], "0")]  # a revised vote
        engine.update(table, feed(table, batch))

    n, k = table.n_items, engine.n_classes
    item, labeler, label = table.columns()
    structure = incidence(item, labeler, label.astype(np.intp), n, len(table.labelers), k)
    np.testing.assert_allclose(engine.counts, structure.T @ engine.posteriors[:n], atol=1e-8)
    np.testing.assert_allclose(engine.class_mass, engine.posteriors[:n].sum(axis=0), atol=1e-8)

    names, classes = table.items.names, table.classes.names
    consensus = {names[i]: classes[c] for i, c in enumerate(engine.labels(np.arange(n)))}
    adjudicated = {votes[0][0]: "1"}
    expected = _agreement_with_consensus(table.plain_votes(), consensus, adjudicated, 2)
    got = {who: (int(engine.judged[w]), int(engine.agreeing[w]))
           for w, who in enumerate(table.labelers.names) if engine.judged[w]}
    assert got == {who: (e["items"], round(e["agreement_with_consensus"] * e["items"]))
                   for who, e in expected.items()}
    sizes = table.item_size[:n]
    assert engine.with_consensus == int((sizes >= 2).sum())
    assert np.isclose(engine.mean_confidence,
                      engine.posteriors[:n].max(axis=1)[sizes >= 2].mean())
