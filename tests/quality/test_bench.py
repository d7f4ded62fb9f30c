"""The quality benchmark's simulations, on small sizes (no timing is asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import quality, report
from bench.quality import StampSetup, evidence_floor, rubber_stamp, simulate_crowd


def test_simulated_crowd_has_three_distinct_labelers_per_item():
    crowd = simulate_crowd(1000, seed=3)
    assert len(crowd.item) == 3000 and len(crowd.kinds) == 40
    pairs = crowd.item * 100 + crowd.labeler
    assert len(np.unique(pairs)) == 3000
    good = [i for i, k in enumerate(crowd.kinds) if k == "good"]
    mine = np.isin(crowd.labeler, good)
    assert np.mean(crowd.label[mine] == crowd.truth[crowd.item[mine]]) > 0.8


def test_dawid_skene_beats_majority_vote_on_the_simulated_crowd():
    results = quality.run_aggregators(simulate_crowd(5000, seed=4), repeats=1)
    ds = results["Dawid-Skene (loopwise)"]["accuracy"]
    assert ds > results["majority vote (loopwise)"]["accuracy"]


def test_rubber_stampers_are_flagged_and_honest_reviewers_are_not():
    out = rubber_stamp(StampSetup(runs=2, tasks=800, honest=10, stampers=3), [12.0])
    combined = next(r for r in out["table"] if r["evidence"] == "combined")
    assert combined["stampers_flagged"] == 1.0
    assert combined["false_positive_rate"] == 0.0
    floor = evidence_floor(StampSetup())
    assert floor["min_tasks"] < floor["min_tasks_gold_only"]


def test_write_section_replaces_only_its_own_section(tmp_path):
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n## Other\n\nkeep me\n\n"
                      f"{quality.SECTION}\n\nold\n\n## Later\n\nkeep me too\n")
    report.write_section(quality.SECTION, f"{quality.SECTION}\n\nnew\n", path=target)
    text = target.read_text()
    assert "old" not in text and "new" in text
    assert "keep me\n" in text and "keep me too" in text
    assert text.index("## Other") < text.index(quality.SECTION) < text.index("## Later")


def test_the_review_benchmark_runs_its_populations_through_the_services(settings):
    """``loopwise bench review`` on a small size: the simulation and the services both
    run every population and catch a stamper; it uses a Redis database of its own (it
    flushes it)."""
    from bench import review

    if settings.cluster:  # it flushes a database of its own; a cluster has only one
        pytest.skip("the review benchmark flushes its own Redis database: single Redis only")
    own_redis = settings.redis_url.rsplit("/", 1)[0] + "/7"
    body = review.run(per_population=1, tasks=600, seed=3, redis_url=own_redis,
                      port_base=18700, simulated=20)
    simulated, served = body.split("**Through the four services")
    for part, n in ((simulated, 20), (served, 1)):
        rows = {line.split("|")[1].strip(): line for line in part.splitlines()
                if line.startswith("| ") and "population" not in line}
        assert set(rows) == set(review.POPULATIONS), body
        assert f"| stamper | {n} | 100.0% |" in rows["stamper"], body
    assert "| honest | 20 | 0.0% |" in simulated, body


def test_the_scale_benchmark_runs_on_small_sizes():
    """``loopwise bench quality``'s scale parts on small sizes: the latency run takes the
    incremental path, runs until background refits were adopted, and compares with the
    old full recompute and with a full refit; the memory run measures both layouts. No
    figure is asserted but the count of differing labels."""
    import asyncio

    from bench import quality_scale

    latency = asyncio.run(quality_scale._latency(3000, min_bursts=2, baseline_bursts=1))
    assert latency["baseline_runs"] == 1 and latency["published"] > 0
    assert latency["refits_adopted"] >= quality_scale.MIN_ADOPTIONS
    assert latency["bursts"] >= 2
    assert latency["adopting_s"] <= latency["max"]
    assert latency["differ_from_full_refit"] <= 0.01 * latency["published"]
    latency["p95_runs"] = [latency["p95"]]
    assert "| 3,000 |" in "\n".join(quality_scale.render_latency([latency]))
    old = asyncio.run(quality_scale._measure_memory(3000, "old"))
    new = asyncio.run(quality_scale._measure_memory(3000, "new"))
    assert new["table_bytes"] > 0 and {"rss_bytes", "state_only_bytes"} <= set(old)


def test_the_restart_benchmark_loads_a_checkpoint_and_the_votes_after_it(tmp_path):
    """``loopwise bench quality --restart-votes`` on a small project, on SQLite: both
    restarts (checkpoint + tail, every vote replayed) end with every vote."""
    import asyncio

    from bench import quality_scale

    r = asyncio.run(quality_scale._restart_times(
        2000, f"sqlite+aiosqlite:///{tmp_path}/quality.db", tail=500))
    assert r["rows_after_checkpoint_load"] == r["rows_after_replay"] == 2500
    assert r["checkpoint_bytes"] > 0
    assert "| 2,500 |" in "\n".join(quality_scale.render_restart(r))
