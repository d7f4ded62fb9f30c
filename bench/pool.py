"""Large-pool benchmark: can the scorer pick a diverse batch from 1M items cheaply?

Compares, in one run and on the same synthetic 1,000,000 x 64 float32 pool:

(a) ``model.predict_proba(pool)`` alone -- the floor any selection pays;
(b) the whole selection: ``score_pool_chunked`` (margin) + ``select_batch``
    with a diversity method, picking ``budget`` distinct items.

Every measurement runs in a fresh ``python -m bench.pool --measure ...``
subprocess so peak-memory figures cannot leak between measurements. Run with
``python -c "from bench.pool import main; print(main())"``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

N_CLASSES = 10
N_LABELED = 5_000
CLASS_SPREAD = 0.25  # std of the class means; 1.0 is the within-class noise
CHUNK_ROWS = 65_536
REPEATS = 3
MiB = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = Path(__file__).resolve().parent


def gaussian_mixture(
    n: int, d: int, *, seed: int, chunk_rows: int = 1 << 17
) -> tuple[NDArray[np.float32], NDArray[np.int_]]:
    """``n`` float32 points from a fixed 10-class isotropic mixture, built in chunks.

    Class means depend only on ``d`` (not ``seed``), so the labelled set and the
    pool come from the same mixture; ``seed`` picks the points.
    """
    means = np.random.default_rng(12345).normal(0, CLASS_SPREAD, size=(N_CLASSES, d))
    means = means.astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, size=n)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        X[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32)
        X[start:stop] += means[labels[start:stop]]
    return X, labels


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB; Linux reports ru_maxrss in KiB."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    current = resident_pages * os.sysconf("SC_PAGE_SIZE") / MiB
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _operation(which: str, model: Any, pool: NDArray[np.float32], budget: int) -> dict[str, Any]:
    from services.scorer.selection import score_pool_chunked, select_batch

    if which == "predict_proba":
        proba = model.predict_proba(pool)
        return {"rows": int(proba.shape[0])}
    diversity = which.removeprefix("select_")
    started = time.perf_counter()
    scored = score_pool_chunked(model, pool, "margin", chunk_rows=CHUNK_ROWS)
    scored_at = time.perf_counter()
    picked = select_batch(scored.scores, budget, features=pool, diversity=diversity, rng=0)
    done = time.perf_counter()
    if len(picked) != budget or len(np.unique(picked)) != budget:
        raise AssertionError(f"{which}: expected {budget} distinct items, got {len(picked)}")
    return {
        "scoring_s": scored_at - started,
        "selection_s": done - scored_at,
        "picked": len(picked),
        "mean_margin_score_picked": float(scored.scores[picked].mean()),
        "mean_margin_score_pool": float(scored.scores.mean()),
    }


def _measure(which: str, workdir: Path, budget: int) -> dict[str, Any]:
    """Runs inside a fresh subprocess: load, take a baseline, time REPEATS runs."""
    pool = np.load(workdir / "pool.npy")
    with open(workdir / "model.pkl", "rb") as fh:
        model = pickle.load(fh)
    import services.scorer.selection  # noqa: F401  (import cost stays out of the numbers)

    _operation(which, model, pool[:CHUNK_ROWS], min(budget, 100))  # warm code paths
    rss_before, peak_before = _rss_mib()
    times, details = [], {}
    for _ in range(REPEATS):
        started = time.perf_counter()
        details = _operation(which, model, pool, budget)
        times.append(time.perf_counter() - started)
    rss_after, peak_after = _rss_mib()
    # A separate, untimed run under tracemalloc: peak bytes numpy/Python allocated.
    tracemalloc.start()
    _operation(which, model, pool, budget)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "which": which,
        "times_s": times,
        "median_s": float(np.median(times)),
        "baseline_rss_mib": rss_before,
        "baseline_peak_mib": peak_before,
        "peak_rss_mib": peak_after,
        "peak_increase_mib": peak_after - peak_before,
        "rss_after_mib": rss_after,
        "tracemalloc_peak_mib": traced_peak / MiB,
        **details,
    }


def _run_measurement(which: str, workdir: Path, budget: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.pool", "--measure", which, str(workdir), str(budget)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(
        f"[pool] {which:16s} median {result['median_s']:.3f}s, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB (+{result['peak_increase_mib']:.0f})",
        file=sys.stderr,
        flush=True,
    )
    return result


def main(n: int = 1_000_000, d: int = 64, budget: int = 1000) -> str:
    """Build the pool, measure (a) and (b) in fresh subprocesses; return markdown."""
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="loopwise-pool-"))
    try:
        X_labeled, y_labeled = gaussian_mixture(N_LABELED, d, seed=1)
        model = LogisticRegression(max_iter=1000).fit(X_labeled, y_labeled)
        pool, pool_labels = gaussian_mixture(n, d, seed=2)
        pool_accuracy = float(model.score(pool[:100_000], pool_labels[:100_000]))
        np.save(workdir / "pool.npy", pool)
        pool_mib = pool.nbytes / MiB
        del pool, pool_labels
        with open(workdir / "model.pkl", "wb") as fh:
            pickle.dump(model, fh)
        print(f"[pool] built {n} x {d} pool ({pool_mib:.0f} MiB)", file=sys.stderr, flush=True)

        order = ["predict_proba", "select_kmeanspp", "select_coreset"]
        results = {which: _run_measurement(which, workdir, budget) for which in order}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base = results["predict_proba"]
    rows = []
    for which, label in (
        ("predict_proba", "(a) `model.predict_proba(pool)`"),
        ("select_kmeanspp", "(b) chunked margin + kmeanspp, 1,000 items"),
        ("select_coreset", "(b') chunked margin + coreset, 1,000 items"),
    ):
        r = results[which]
        split = f"{r['scoring_s']:.2f} + {r['selection_s']:.2f}" if "scoring_s" in r else "-"
        rows.append(
            f"| {label} | {r['median_s']:.2f} | {split} | {r['median_s'] / base['median_s']:.2f}x "
            f"| {r['peak_rss_mib']:.0f} | {r['peak_increase_mib']:.0f} "
            f"| {r['tracemalloc_peak_mib']:.0f} |"
        )
    ratio = results["select_kmeanspp"]["median_s"] / base["median_s"]
    ratio_coreset = results["select_coreset"]["median_s"] / base["median_s"]
    worst_peak = max(r["peak_rss_mib"] for r in results.values() if "scoring_s" in r)
    elapsed = time.perf_counter() - started
    km = results["select_kmeanspp"]
    report = "\n".join(
        [
            "# Large-pool selection benchmark",
            "",
            f"Pool: {n:,} x {d} float32 ({pool_mib:.0f} MiB) from a {N_CLASSES}-class "
            f"Gaussian mixture (class means ~ N(0, {CLASS_SPREAD}²), unit noise). Model: "
            f"LogisticRegression(lbfgs, max_iter=1000) trained on {N_LABELED:,} labelled "
            f"float32 points from the same mixture (accuracy on the pool: {pool_accuracy:.3f}). "
            f"Budget: {budget:,} distinct items; chunks of {CHUNK_ROWS:,} rows; diversity "
            f"over the top {10 * budget:,} margin candidates (10 x budget).",
            "",
            "| measurement | median wall s | scoring + selection s | vs (a) "
            "| peak RSS MiB | peak increase MiB | tracemalloc peak MiB |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"**Time ratio (b)/(a) = {ratio:.2f}x** (goal ≤ 1.5x; coreset variant "
            f"{ratio_coreset:.2f}x). **Peak process RSS for (b) = {worst_peak:.0f} MiB** "
            "(goal < 1024 MiB, pool included).",
            f"Mean margin score of the picked batch {km['mean_margin_score_picked']:.3f} vs "
            f"{km['mean_margin_score_pool']:.3f} over the pool.",
            "",
            "How it was measured: each row runs in its own fresh `python -m bench.pool "
            "--measure` subprocess, which loads the pool (`np.load`) and the pickled model, "
            f"runs the operation once on {CHUNK_ROWS:,} rows to warm code paths, then reads "
            "`resource.getrusage(RUSAGE_SELF).ru_maxrss` as the baseline (it equals the "
            "resident pool + interpreter + libraries at that point). It then times "
            f"{REPEATS} full runs with `time.perf_counter` (median reported) and reads "
            "`ru_maxrss` again: *peak RSS* is the process's high-water mark including the "
            "256 MiB pool, *peak increase* is that minus the baseline. The tracemalloc column "
            "is one more, untimed run under `tracemalloc` (peak bytes allocated by "
            "numpy/Python during the operation, excluding the already-loaded pool). BLAS and "
            f"numpy use their default threads ({os.cpu_count()} CPUs) in every row.",
            "",
            f"Total benchmark runtime: {elapsed:.0f} s (including pool generation and "
            "model training).",
            "",
        ]
    )
    (OUT_DIR / "results").mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results" / "pool.md").write_text(report)
    return report


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--measure", nargs=3, metavar=("WHICH", "WORKDIR", "BUDGET"))
    args = parser.parse_args()
    if args.measure:
        which, workdir, budget = args.measure
        print(json.dumps(_measure(which, Path(workdir), int(budget))))
    else:
        print(main())


if __name__ == "__main__":
    _cli()
