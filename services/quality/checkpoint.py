"""A project's quality state as bytes and back: what a restart loads instead of replaying
every vote it has ever stored.

Rebuilding the state of a project of a million votes from ``quality_label_votes`` took
about 30 s (every row read, decoded and applied one at a time, then a full refit); a
checkpoint is the state itself (vote table, consensus engine, counters, monitors) as of
one stored batch number, so a restart loads it and replays only the votes stored after
that batch. Pickle, because the state is NumPy arrays and plain dataclasses that pickle
as they are (arrays as raw buffers); the bytes come from this service's own table, never
from outside. A checkpoint written by another :data:`FORMAT` is ignored (the votes are
replayed instead), so changing the state's classes only costs one slow restart.
"""

from __future__ import annotations

import dataclasses
import pickle
import zlib

from services.quality.state import ProjectState

__all__ = ["FORMAT", "dump", "load", "pack"]

FORMAT = 1  # bump when ProjectState or what it holds changes shape


def dump(state: ProjectState) -> bytes:
    """The state as (uncompressed) bytes: a consistent copy, to call between two
    mutations (in the event loop). A running refit's bookkeeping is left out: it belongs
    to this process, and the items it would re-touch are still in ``touched``."""
    kept = dataclasses.replace(state, in_flight=[], pending_refit=None)
    return pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL)


def pack(raw: bytes) -> bytes:
    """Compressed for the table (level 1: fast; it runs in a worker thread)."""
    return zlib.compress(raw, 1)


def load(blob: bytes) -> ProjectState:
    state = pickle.loads(zlib.decompress(blob))
    if not isinstance(state, ProjectState):
        raise TypeError(f"a checkpoint holds a {type(state).__name__}, not a ProjectState")
    return state
