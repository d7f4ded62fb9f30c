"""Batch inserts in statements of a few fixed sizes: a driver prepares each SQL text."""

from __future__ import annotations

from shared.db import STATEMENT_ROWS_MAX, statement_chunks, statement_sizes


def test_a_batch_goes_in_powers_of_two_largest_first():
    assert statement_sizes(37) == [32, 4, 1]
    assert statement_sizes(0) == []
    assert statement_sizes(2 * STATEMENT_ROWS_MAX + 3) == [STATEMENT_ROWS_MAX] * 2 + [2, 1]


def test_every_batch_size_up_to_ten_thousand_needs_at_most_ten_statement_sizes():
    used = set()
    for n in range(10_001):
        sizes = statement_sizes(n)
        assert sum(sizes) == n
        used.update(sizes)
    assert used == {2**k for k in range(10)}


def test_chunks_keep_the_rows_and_their_order():
    rows = list(range(1234))
    assert [x for chunk in statement_chunks(rows) for x in chunk] == rows
