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


async def test_upsert_replaces_the_row_of_a_key_and_adds_the_others(engine):
    """The consensus rewrite: one row per (project, item), the newest label, however many
    rows (more than one chunk) and whether or not the row was there."""
    import uuid
    from datetime import UTC, datetime

    from sqlalchemy import select

    from services.quality.tables import quality_consensus
    from shared.db import upsert

    project = f"t-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)

    def rows(label: str, n: int) -> list[dict]:
        return [{"project": project, "item_id": f"i{k}", "label": label, "confidence": 0.9,
                 "revision": 1, "event_id": f"e{k}{label}", "updated_at": now}
                for k in range(n)]

    async with engine.begin() as conn:
        await upsert(conn, quality_consensus, rows("cat", 600))
        await upsert(conn, quality_consensus, rows("dog", 700))  # 600 replaced, 100 new
        kept = (await conn.execute(select(quality_consensus.c.item_id, quality_consensus.c.label)
                                   .where(quality_consensus.c.project == project))).all()
    assert len(kept) == 700 and {label for _, label in kept} == {"dog"}
