"""Small exact tests two services use to say whether a difference is measurable.

Exact rather than asymptotic: the counts loopwise tests (answers on gold items, gold
items a model gets right) are often a few dozen, where the normal approximation's
intervals fall outside [0, 1] and its p-values are off.
"""

from __future__ import annotations

from scipy.stats import beta, binomtest

__all__ = ["clopper_pearson", "mcnemar_exact"]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) interval of a share ``k / n``; None without data."""
    if n == 0:
        return None
    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def mcnemar_exact(better: int, worse: int) -> float:
    """Two-sided p-value of McNemar's exact test on the discordant pairs of a paired
    comparison (``better``: pairs only the second got right; ``worse``: only the first)."""
    discordant = better + worse
    return float(binomtest(better, discordant, 0.5).pvalue) if discordant else 1.0
