"""How far a stream may be trimmed: never past what a consumer group still needs.

Redis streams grow until trimmed. A fixed MAXLEN would drop entries that a
lagging or stopped consumer has not read yet, which breaks at-least-once
delivery. The safe point is the oldest entry some group still needs (its
oldest pending entry, or the first it has not read), and a retention period
keeps acknowledged entries a while longer for replay and inspection. This
module is that decision, without I/O; :meth:`shared.bus.Bus.trim` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

EntryId = tuple[int, int]  # (milliseconds, sequence)


def parse_id(entry_id: str | bytes) -> EntryId:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(entry_id: EntryId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


@dataclass(frozen=True, slots=True)
class GroupPosition:
    """Where a consumer group stands on a stream (XINFO GROUPS, XPENDING)."""

    name: str
    last_delivered: str  # the newest entry the group has read ("0-0": none)
    oldest_pending: str | None  # its oldest read but unacknowledged entry


def needed_from(group: GroupPosition) -> EntryId:
    """The oldest entry this group still needs."""
    if group.oldest_pending is not None:
        return parse_id(group.oldest_pending)
    ms, seq = parse_id(group.last_delivered)
    return ms, seq + 1


def trim_point(groups: list[GroupPosition], now_ms: int, retention_ms: int) -> str | None:
    """The id below which every entry may go (XTRIM MINID), or None to keep everything.

    An entry may go when every group has acknowledged it and it is older than
    the retention. A stream without groups is kept whole: nobody can say yet
    what its consumers will need.
    """
    if not groups:
        return None
    point = min(min(needed_from(g) for g in groups), (max(now_ms - retention_ms, 0), 0))
    return format_id(point) if point > (0, 1) else None
