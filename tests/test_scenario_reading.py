"""The automation-bias scenario's reading is the run's figures in words: a run where the
prelabel stage did help must not be told that it made things worse."""

from __future__ import annotations

from loopwise.demo import Summary, _reading


def _summary(mode: str, caught: int, after: float, verdict: str,
             labelers: dict | None = None, flagged: list[str] | None = None) -> Summary:
    evaluation = {"stages": {f"review/{mode}": {"errors_caught": caught,
                                                "after": {"rate": after},
                                                "verdict": verdict}},
                  "before_review": {"model_on_gold": {"rate": 0.18}},
                  "labelers": labelers or {}}
    return Summary(project=f"p-{mode}", mode=mode, flagged=flagged or [],
                   evaluation=evaluation)


def test_the_reading_follows_the_figures_of_the_run():
    stampers = ["stamper-1"]
    bad = [_summary("prelabel", 6, 0.10, "no measurable difference",
                    {"stamper-1": {"correction_rate": 0.0},
                     "reviewer-2": {"correction_rate": 0.21}}, ["stamper-1"]),
           _summary("blind", 30, 0.04, "reduced label error")]
    text = _reading(bad, stampers)
    assert "caught 6 errors on gold against 30" in text
    assert "left more label error behind (10% against 4%)" in text
    assert "verdict: no measurable difference" in text
    assert "stampers corrected 0% of the pre-labels" in text
    assert "honest reviewers 21%" in text and "model error of 18%" in text
    assert "flagged stamper-1" in text

    even = [_summary("prelabel", 30, 0.04, "reduced label error"),
            _summary("blind", 30, 0.04, "reduced label error")]
    text = _reading(even, stampers)
    assert "left no more label error behind" in text and "flagged nobody" in text
