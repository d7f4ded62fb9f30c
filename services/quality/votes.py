"""The latest vote per (item, labeler) of one project, in compact typed arrays.

The quality service keeps every live vote in memory: consensus and agreement are
computed from them. As a dict of dicts of vote objects that cost about 1 KB a vote
(strings, a datetime and a dataclass per vote, twice over with the running agreement's
copy); here a vote is one row of six typed columns (24 bytes) and an item, a labeler, a
class or a guideline version is stored once as a string and referred to by an integer
code. The rows of one item are chained (``row_next``), so finding a labeler's earlier
vote on an item reads the item's few rows, never the table. Arrays grow by doubling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.quality.windows import VoteSnapshot, WindowSample

__all__ = ["Codes", "Put", "VoteTable", "grown"]

_NONE = -1


class Codes:
    """Strings to dense integer codes and back, in order of first appearance."""

    __slots__ = ("index", "names")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []

    def code(self, name: str) -> int:
        found = self.index.get(name)
        if found is None:
            found = self.index[name] = len(self.names)
            self.names.append(name)
        return found

    def get(self, name: str) -> int | None:
        return self.index.get(name)

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True, slots=True)
class Put:
    """What storing one vote changed."""

    item: int
    labeler: int
    row: int
    previous: int  # the labeler's earlier label code on the item, or -1
    others: list[int]  # the other labelers' label codes on the item


def grown(array: npt.NDArray[Any], needed: int, fill: float = 0) -> npt.NDArray[Any]:
    """``array`` with room for ``needed`` entries (doubling), new ones set to ``fill``."""
    if needed <= len(array):
        return array
    bigger = np.full(max(needed, 2 * len(array), 1024), fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class VoteTable:
    """Rows of (item, labeler, label, time, guideline version), one per (item, labeler)."""

    def __init__(self) -> None:
        self.items, self.labelers, self.classes, self.guidelines = (
            Codes(), Codes(), Codes(), Codes())
        self.guidelines.code("")  # code 0: no guideline version
        self.n_rows = 0
        self.row_item = np.zeros(0, dtype=np.int32)
        self.row_labeler = np.zeros(0, dtype=np.int32)
        self.row_label = np.zeros(0, dtype=np.int16)
        self.row_time = np.zeros(0, dtype=np.float64)
        self.row_guideline = np.zeros(0, dtype=np.int16)
        self.row_next = np.zeros(0, dtype=np.int32)
        self.item_head = np.zeros(0, dtype=np.int32)
        self.item_size = np.zeros(0, dtype=np.int32)

    @property
    def n_items(self) -> int:
        return len(self.items)

    _ROW_ARRAYS = ("row_item", "row_labeler", "row_label", "row_time", "row_guideline",
                   "row_next")

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the spare room the arrays grew into (a checkpoint)."""
        kept = dict(self.__dict__)
        for name in self._ROW_ARRAYS:
            kept[name] = kept[name][: self.n_rows]
        for name in ("item_head", "item_size"):
            kept[name] = kept[name][: self.n_items]
        return kept

    def __setstate__(self, kept: dict[str, Any]) -> None:
        self.__dict__.update(kept)

    def put(self, item_id: str, labeler_id: str, label: str, at: float,
            guideline_version: str | None) -> Put:
        """Store a vote; a labeler's newer vote on an item replaces the older one."""
        item = self.items.code(item_id)
        labeler = self.labelers.code(labeler_id)
        label_code = self.classes.code(label)
        if item >= len(self.item_head):
            self.item_head = grown(self.item_head, item + 1, _NONE)
            self.item_size = grown(self.item_size, item + 1)
        row, previous, others = _NONE, _NONE, []
        r = int(self.item_head[item])
        while r != _NONE:
            if self.row_labeler[r] == labeler:
                row, previous = r, int(self.row_label[r])
            else:
                others.append(int(self.row_label[r]))
            r = int(self.row_next[r])
        if row == _NONE:
            row = self.n_rows
            self.n_rows += 1
            if row >= len(self.row_item):
                for name in self._ROW_ARRAYS:
                    setattr(self, name, grown(getattr(self, name), row + 1))
            self.row_item[row] = item
            self.row_labeler[row] = labeler
            self.row_next[row] = self.item_head[item]
            self.item_head[item] = row
            self.item_size[item] += 1
        self.row_label[row] = label_code
        self.row_time[row] = at
        self.row_guideline[row] = self.guidelines.code(guideline_version or "")
        return Put(item, labeler, row, previous, others)

    def rows_of(self, item: int) -> Iterator[int]:
        r = int(self.item_head[item])
        while r != _NONE:
            yield r
            r = int(self.row_next[r])

    def rows_of_items(self, items: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """Every row of the given items (in no particular order)."""
        rows: list[int] = []
        head, following = self.item_head, self.row_next
        for item in items.tolist():
            r = int(head[item])
            while r != _NONE:
                rows.append(r)
                r = int(following[r])
        return np.asarray(rows, dtype=np.intp)

    def votes_on(self, item: int) -> dict[str, str]:
        """{labeler: label} of one item."""
        return {self.labelers.names[self.row_labeler[r]]: self.classes.names[self.row_label[r]]
                for r in self.rows_of(item)}

    def columns(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32],
                               npt.NDArray[np.int16]]:
        """(item, labeler, label) codes of the live rows, as views (copy before mutating)."""
        n = self.n_rows
        return self.row_item[:n], self.row_labeler[:n], self.row_label[:n]

    def snapshot(self) -> VoteSnapshot:
        """The votes as strings, for the agreement statistics."""
        n = self.n_rows

        def decode(codes: Codes, column: npt.NDArray[np.generic]) -> npt.NDArray[np.object_]:
            return np.asarray(codes.names, dtype=object)[column[:n]] if n else \
                np.zeros(0, dtype=object)

        return VoteSnapshot(
            items=decode(self.items, self.row_item),
            labelers=decode(self.labelers, self.row_labeler),
            labels=decode(self.classes, self.row_label),
            times=self.row_time[:n].copy(),
            guideline_versions=decode(self.guidelines, self.row_guideline),
        )

    def sample(self, max_items: int, since: float | None = None,
               seed: int = 0) -> WindowSample:
        """The votes at or after ``since`` of at most ``max_items`` items drawn uniformly
        (without replacement) among those with two or more such votes: what the agreement
        bootstrap reads, bounded whatever the project's size. The counts of the whole
        window come along, exact."""
        n = self.n_rows
        in_window = np.ones(n, dtype=bool) if since is None else self.row_time[:n] >= since
        item = self.row_item[:n]
        per_item = np.bincount(item[in_window], minlength=self.n_items)
        pairable = np.flatnonzero(per_item >= 2)
        chosen = pairable
        if len(pairable) > max_items:
            chosen = np.random.default_rng(seed).choice(pairable, max_items, replace=False)
        keep = np.zeros(self.n_items, dtype=bool)
        keep[chosen] = True
        rows = np.flatnonzero(in_window & keep[item])

        def decode(codes: Codes, column: npt.NDArray[np.generic]) -> npt.NDArray[np.object_]:
            return np.asarray(codes.names, dtype=object)[column[rows]] if len(rows) else \
                np.zeros(0, dtype=object)

        return WindowSample(
            VoteSnapshot(items=decode(self.items, self.row_item),
                         labelers=decode(self.labelers, self.row_labeler),
                         labels=decode(self.classes, self.row_label),
                         times=self.row_time[rows],
                         guideline_versions=decode(self.guidelines, self.row_guideline)),
            labels=int(in_window.sum()), items_with_overlap=len(pairable),
            sampled_items=len(chosen))

    def counts_by_item_version(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
        """Per (item, guideline version) that has votes: its version code and its count of
        each class, the sufficient statistic of nominal agreement per version (one pass
        over the integer columns, no vote decoded)."""
        n, g, k = self.n_rows, max(len(self.guidelines), 1), len(self.classes)
        key = self.row_item[:n].astype(np.int64) * g + self.row_guideline[:n]
        keys, inverse = np.unique(key, return_inverse=True)
        counts = np.bincount(inverse.astype(np.int64) * k + self.row_label[:n],
                             minlength=len(keys) * k).reshape(len(keys), k)
        return (keys % g).astype(np.intp), counts

    def plain_votes(self) -> dict[str, dict[str, str]]:
        """item -> {labeler: label}: every vote, for tools and small tests."""
        return {name: self.votes_on(item) for item, name in enumerate(self.items.names)
                if self.item_size[item]}

    def items_since(self, labeler_id: str, since: float | None) -> list[str]:
        """Items the labeler's latest vote on is at or after ``since``, oldest first."""
        labeler = self.labelers.get(labeler_id)
        if labeler is None:
            return []
        n = self.n_rows
        mine = self.row_labeler[:n] == labeler
        if since is not None:
            mine &= self.row_time[:n] >= since
        rows = np.flatnonzero(mine)
        rows = rows[np.argsort(self.row_time[rows], kind="stable")]
        return [self.items.names[i] for i in self.row_item[rows].tolist()]

    def nbytes(self) -> int:
        """Bytes held by the arrays (the strings are extra)."""
        return sum(getattr(self, name).nbytes for name in (
            "row_item", "row_labeler", "row_label", "row_time", "row_guideline", "row_next",
            "item_head", "item_size"))
