"""The compact vote table: the latest vote per (item, labeler), strings stored once."""

from __future__ import annotations

import numpy as np

from services.quality.votes import VoteTable


def test_a_newer_vote_of_the_same_labeler_replaces_the_older_one():
    table = VoteTable()
    first = table.put("i1", "ann", "cat", 1.0, "g1")
    table.put("i1", "ben", "dog", 2.0, None)
    again = table.put("i1", "ann", "dog", 3.0, "g2")

    assert first.previous == -1 and again.row == first.row
    assert again.previous == table.classes.index["cat"]
    assert again.others == [table.classes.index["dog"]]
    assert table.n_rows == 2 and table.item_size[0] == 2
    assert table.plain_votes() == {"i1": {"ann": "dog", "ben": "dog"}}


def test_snapshot_and_items_since_read_the_latest_votes():
    table = VoteTable()
    for n, (item, who, label) in enumerate([("i1", "ann", "a"), ("i2", "ann", "b"),
                                            ("i2", "ben", "b"), ("i3", "ann", "a")]):
        table.put(item, who, label, float(n), "g1" if n % 2 else None)
    table.put("i1", "ann", "b", 10.0, None)  # a revision: now the newest of ann's votes

    snapshot = table.snapshot()
    rows = sorted(zip(snapshot.items, snapshot.labelers, snapshot.labels,
                      snapshot.guideline_versions, strict=True))
    assert rows == [("i1", "ann", "b", ""), ("i2", "ann", "b", "g1"), ("i2", "ben", "b", ""),
                    ("i3", "ann", "a", "g1")]
    assert table.items_since("ann", 1.0) == ["i2", "i3", "i1"]
    assert table.items_since("ann", None) == ["i2", "i3", "i1"]
    assert table.items_since("nobody", None) == []


def test_the_table_grows_past_its_first_allocation():
    table = VoteTable()
    for n in range(5000):
        table.put(f"i{n // 3}", f"u{n % 3}", str(n % 5), float(n), None)
    item = table.columns()[0]
    assert len(item) == 5000 and table.n_items == 1667
    assert np.array_equal(np.bincount(item), np.r_[np.full(1666, 3), 2])
    assert table.votes_on(table.items.index["i10"]) == {"u0": "0", "u1": "1", "u2": "2"}
