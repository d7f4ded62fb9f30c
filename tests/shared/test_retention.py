"""Where a stream may be trimmed: never past what a consumer group still needs."""

from __future__ import annotations

from shared.retention import GroupPosition, needed_from, parse_id, trim_point

HOUR = 3_600_000
NOW = 10 * HOUR


def test_a_group_needs_its_oldest_pending_entry_or_the_first_it_has_not_read():
    assert needed_from(GroupPosition("g", "500-3", "100-0")) == (100, 0)
    assert needed_from(GroupPosition("g", "500-3", None)) == (500, 4)
    assert needed_from(GroupPosition("g", "0-0", None)) == (0, 1)  # read nothing yet


def test_the_slowest_group_decides():
    groups = [GroupPosition("fast", f"{NOW}-0", None),
              GroupPosition("slow", f"{NOW - 5 * HOUR}-7", f"{NOW - 6 * HOUR}-2")]
    assert trim_point(groups, NOW, retention_ms=0) == f"{NOW - 6 * HOUR}-2"


def test_retention_keeps_acknowledged_entries_a_while():
    groups = [GroupPosition("g", f"{NOW}-0", None)]
    assert trim_point(groups, NOW, retention_ms=HOUR) == f"{NOW - HOUR}-0"
    assert trim_point(groups, NOW, retention_ms=0) == f"{NOW}-0"  # keeps what is now
    assert trim_point(groups, NOW, retention_ms=20 * HOUR) is None  # all inside retention


def test_nothing_is_trimmed_without_groups_or_before_any_read():
    assert trim_point([], NOW, 0) is None
    assert trim_point([GroupPosition("new", "0-0", None)], NOW, 0) is None
    assert parse_id(b"1700000000000-5") == (1_700_000_000_000, 5)
