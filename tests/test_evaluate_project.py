"""``loopwise evaluate --project`` and ``GET :8004/.../evaluation`` on a project whose
label events went through the real label stream and quality service; the HTML report
opened in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from shared import streams
from shared.events import LabelEvent
from shared.wire import encode_event
from tests.conftest import service_env
from tests.helpers import client, groups_idle, token, wait_for
from tests.router.test_web import LAUNCH_ARGS, _chromium

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, tzinfo=UTC)
LABELS = ("a", "b", "c")


def _scenario(project: str, seed: int = 11) -> tuple[list[LabelEvent], dict[str, int]]:
    """120 gold items, the model right on 70%: a blind reviewer right on 90% whatever
    the model says, and a prelabel reviewer who keeps every pre-label."""
    rng = random.Random(seed)
    events, truth = [], {"model_wrong": 0, "caught": 0, "introduced": 0}
    for i in range(120):
        answer = rng.choice(LABELS)
        model = answer if rng.random() < 0.7 else rng.choice([x for x in LABELS if x != answer])
        blind = answer if rng.random() < 0.9 else rng.choice([x for x in LABELS if x != answer])
        truth["model_wrong"] += model != answer
        truth["caught"] += model != answer and blind == answer
        truth["introduced"] += model == answer and blind != answer
        common = {"project": project, "item_id": f"g{i}", "source": "human",
                  "model_label": model, "gold_label": answer, "duration_ms": 30_000}
        events.append(LabelEvent(labeler_id="bea", label=blind, mode="blind",
                                 created_at=T0 + timedelta(minutes=i), **common))
        events.append(LabelEvent(labeler_id="sam", label=model, mode="prelabel",
                                 shown_prelabel=model, created_at=T0 + timedelta(days=1, minutes=i),
                                 **common))
    return events, truth


async def test_the_evaluation_of_a_stored_project_matches_its_truth_over_http_and_the_cli(
        services, engine, redis, project, tmp_path):
    events, truth = _scenario(project)
    pipe = redis.pipeline(transaction=False)
    for event in events:
        pipe.xadd(streams.LABELS, encode_event(event.to_json()))
    await pipe.execute()
    await groups_idle(redis, (streams.LABELS, streams.GROUP_QUALITY))

    bearer = await token(engine, "rev", "reviewer", project)
    result: dict = {}

    async def consensus_in() -> bool:  # two labels an item: the consensus follows
        nonlocal result
        async with client(services, "quality", bearer) as http:
            r = await http.get(f"/v1/projects/{project}/evaluation")
        assert r.status_code == 200, r.text
        result = r.json()
        return result["stages"].get("consensus/blind", {}).get("items") == 120

    await wait_for(consensus_in, 60, "the consensus of every item")
    await groups_idle(redis, (streams.LABELS, streams.GROUP_QUALITY))
    assert result["gold_items"] == 120 and result["label_events"] == 360  # with consensus
    assert result["before_review"]["model_on_gold"]["errors"] == truth["model_wrong"]
    blind = result["stages"]["review/blind"]
    assert (blind["errors_caught"], blind["errors_introduced"]) == (
        truth["caught"], truth["introduced"])
    assert blind["verdict"] == "reduced label error"
    stamped = result["stages"]["review/prelabel"]
    assert stamped["verdict"] == "no measurable difference"
    assert stamped["human_hours"] == pytest.approx(1.0)  # 120 x 30 s
    assert result["correction"]["correction_rate"]["rate"] == 0.0

    env = {**os.environ, **service_env(services)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loopwise", "evaluate", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    out = await asyncio.to_thread(cli, "--project", project, "--json",
                                  "--report", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stages"] == result["stages"]  # one use case, two doors
    text = await asyncio.to_thread(cli, "--project", project)
    assert "verdict: reduced label error" in text.stdout
    assert "COST:" in text.stdout  # the stamper's stage did nothing measurable
    unknown = await asyncio.to_thread(cli, "--project", f"{project}-none")
    assert unknown.returncode == 1 and "no stored label events" in unknown.stderr

    # No model comparison here (the scorer holds none of these items): the report says
    # why in place of the learning curves.
    texts = await report_renders(tmp_path / "report" / "index.html",
                                 ("error-by-stage", "over-time", "labelers"),
                                 ("stages", "model-comparison"))
    assert "review/blind" in texts["stages"]
    assert "No model comparison" in texts["model-comparison"]


PLOTS = ("error-by-stage", "learning-curves", "over-time", "labelers")


async def report_renders(page_path, plots=PLOTS, texts=()) -> dict[str, str]:
    """Open the report in headless Chromium: every plot drawn (an SVG of a real size), no
    console error, no request leaving the file; the inner text of each ``texts`` id."""
    # Nothing loaded from elsewhere (namespace URIs in the SVG are names, not requests).
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page_path.read_text())
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=_chromium(),
                                                   args=LAUNCH_ARGS)
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda q: problems.append(q.url)
                    if not q.url.startswith("file://") else None)
            await page.goto(page_path.as_uri())
            drawn = await page.locator("figure.plot").evaluate_all("fs => fs.map(f => f.id)")
            assert sorted(drawn) == sorted(plots)
            for plot in plots:
                box = await page.locator(f"#{plot} svg").bounding_box()
                assert box and box["width"] > 100 and box["height"] > 100, plot
            found = {key: await page.locator(f"#{key}").inner_text() for key in texts}
            assert problems == []
            return found
        finally:
            await browser.close()
