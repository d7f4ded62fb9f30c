"""Which candidate pairs reviewers compare next: the ones the reward model is least sure of.

Scoring and selection are separate steps (as in modAL): ``pair_uncertainty`` turns the
model's ``P(a over b)`` into a score, ``select_pairs`` picks a batch by score with
diversity, ``random_pairs`` is the baseline. Uncertainty alone picks near-duplicates
(many pairs of one prompt, or pairs that differ in the same few words: one judgment
would settle them all), so the batch takes at most ``per_prompt`` pairs of a prompt and
no pair whose feature difference points the same way as one already taken (cosine
above ``max_similarity``). Pure: arrays in, indices out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse


def pair_uncertainty(p_first: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """1 at P = 0.5 (the model cannot tell), 0 when it is sure either way."""
    p = np.asarray(p_first, dtype=np.float64)
    return 1.0 - np.abs(2.0 * p - 1.0)


def random_pairs(n: int, k: int, rng: np.random.Generator) -> list[int]:
    """``k`` of ``n`` pairs uniformly at random, without replacement (the baseline)."""
    return [int(i) for i in rng.choice(n, size=min(k, n), replace=False)]


def select_pairs(scores: npt.ArrayLike, k: int, prompts: Sequence[str],
                 differences: sparse.spmatrix | npt.NDArray[np.float64] | None = None,
                 per_prompt: int = 1, max_similarity: float = 0.9) -> list[int]:
    """Up to ``k`` pair indices, highest score first, keeping the batch diverse; when the
    diversity rules leave fewer than ``k``, the best of the skipped fill the batch."""
    s = np.asarray(scores, dtype=np.float64)
    if len(prompts) != s.size:
        raise ValueError("one prompt per pair")
    order = np.argsort(-s, kind="stable")
    rows = None
    if differences is not None:
        d = sparse.csr_matrix(differences, dtype=np.float64)
        norms = np.sqrt(np.asarray(d.multiply(d).sum(axis=1)).ravel())
        rows = sparse.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0)) @ d
    taken: list[int] = []
    skipped: list[int] = []
    per: Counter[str] = Counter()
    for i in order:
        if len(taken) == k:
            break
        if per[prompts[i]] >= per_prompt:
            skipped.append(int(i))
            continue
        if rows is not None and taken:
            similarity = np.abs((rows[taken] @ rows[int(i)].T).toarray().ravel())
            if similarity.max() > max_similarity:
                skipped.append(int(i))
                continue
        taken.append(int(i))
        per[prompts[i]] += 1
    return taken + skipped[: k - len(taken)]
