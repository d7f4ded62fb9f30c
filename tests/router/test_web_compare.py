"""Comparisons on the reviewer page, in a real headless Chromium against the running services.

A reviewer signs in, finds no label task, turns to comparisons with P and judges three
by keyboard: the better of two with 2 then ← (and a reason), a tie with T, a ranking of
three with 3 then 1 (the last ranked by elimination), a both-bad with B after a click
on a candidate, then runs out. Blindness is checked the hard way: before each submit,
neither the page nor anything the browser received holds a model name or a candidate
id. The stored preferences carry the order the page showed.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from services.labels.tables import label_events
from shared import streams
from tests.helpers import client, configure, groups_idle, token
from tests.router.test_web import SCREENSHOTS, Recorder, _browser, _chromium

pytestmark = pytest.mark.integration

MODELS = ("model-alpha-secret", "model-beta-secret", "model-gamma-secret")
IDS = ("cand-one-hidden", "cand-two-hidden", "cand-three-hidden")


def _comparison(n: int, k: int, priority: float) -> dict:
    return {"comparison_id": f"page-{n}", "prompt": f"Question number {n}?",
            "priority": priority,
            "candidates": [{"candidate_id": IDS[i], "model": MODELS[i],
                            "text": f"answer {'ABC'[i]} to question {n}"} for i in range(k)]}


def _is_next(response) -> bool:
    return "/comparisons/next" in response.url


async def _assert_blind(page, recorder: Recorder) -> None:
    """Nothing on the page, and nothing received since the last reveal, names a model or
    a candidate id."""
    dom = await page.content()
    received = (await recorder.bodies())[recorder.revealed:]
    for secret in (*MODELS, *IDS):
        assert secret not in dom, f"the page shows {secret!r} before the submit"
        for url, _, body in received:
            assert secret not in body, f"{url} carried {secret!r} before the submit"


async def _shown(page) -> list[str]:
    return [await c.inner_text() for c in await page.locator(
        "#candidates button.candidate .candidate-text").all()]


async def _take(page, trigger) -> dict:
    async with page.expect_response(_is_next) as info:
        await trigger()
    response = await info.value
    assert response.status == 200, await response.text()
    task = await response.json()
    await page.locator(f'#compare-task[data-task-id="{task["task_id"]}"]').wait_for(
        state="visible")
    # The page shows the candidates in the order drawn for this reviewer.
    assert await _shown(page) == [c["text"] for c in task["candidates"]]
    return task


async def _submit(page, recorder: Recorder, trigger) -> dict:
    await _assert_blind(page, recorder)
    async with page.expect_response(lambda r: "/comparisons/" in r.url
                                    and r.url.endswith("/submit")) as info:
        await trigger()
    response = await info.value
    assert response.status == 200, await response.text()
    out = await response.json()
    recorder.revealed = len(recorder.responses)
    await page.locator("#compare-reveal").wait_for(state="visible")
    shown = await page.inner_text("#compare-reveal")
    for c in out["reveal"]["candidates"]:  # the models only now, at their positions
        assert f"Answer {c['position']}: {c['model']}" in shown
    return out


async def _pressed(page) -> list[str]:
    return [await b.get_attribute("data-position") for b in
            await page.locator('#candidates [aria-pressed="true"]').all()]


async def test_a_reviewer_compares_answers_blind_with_the_keyboard(services, engine, redis,
                                                                   project):
    from playwright.async_api import async_playwright

    chromium = _chromium()
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 1})
    async with client(services, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/comparisons", json={"comparisons": [
            _comparison(1, 2, 4.0), _comparison(2, 2, 3.0), _comparison(3, 3, 2.0),
            _comparison(4, 2, 1.0)]})
        assert r.status_code == 202, r.text
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    bearer = await token(engine, "cora", "labeler", project)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    texts: dict[str, list[str]] = {}  # comparison id -> the texts as shown, in order
    async with async_playwright() as playwright:
        browser = await _browser(playwright, chromium)
        page = await browser.new_page(viewport={"width": 1100, "height": 760})
        recorder = Recorder()
        recorder.revealed = 0  # responses up to the last reveal (it names the models)
        page.on("response", recorder.on_response)
        await page.goto(services.url_of("router") + "/")
        await page.fill("#token", bearer)
        await page.fill("#project", project)
        async with page.expect_response(lambda r: "/tasks/next" in r.url) as info:
            await page.click("#login button[type=submit]")
        assert (await info.value).status == 204  # no label task: the idle view offers P
        await page.locator("#idle-text").wait_for(state="visible")
        await page.wait_for_function(
            "document.getElementById('idle-text').textContent.includes('No task is waiting')")

        # 1: "2" picks answer 2, "←" moves the pick to answer 1; a reason; Enter submits.
        task = await _take(page, lambda: page.keyboard.press("p"))
        texts[task["comparison_id"]] = await _shown(page)
        assert task["comparison_id"] == "page-1"
        assert await page.locator("#compare-submit").is_disabled()
        await page.keyboard.press("2")
        assert await _pressed(page) == ["2"]
        await page.keyboard.press("ArrowLeft")
        assert await _pressed(page) == ["1"]
        await page.keyboard.press("r")
        await page.keyboard.type("more precise")
        await page.screenshot(path=str(SCREENSHOTS / "reviewer-compare.png"))
        first = await _submit(page, recorder, lambda: page.keyboard.press("Enter"))
        assert first["status"] == "recorded"
        await page.screenshot(path=str(SCREENSHOTS / "reviewer-compare-reveal.png"))

        # 2: a tie; the reveal of 1 is gone before 2 is judged.
        task = await _take(page, lambda: page.keyboard.press("n"))
        assert task["comparison_id"] == "page-2"
        assert await page.locator("#compare-reveal").is_hidden()
        assert await page.locator("#compare-reveal > *").count() == 0
        texts[task["comparison_id"]] = await _shown(page)
        await page.keyboard.press("t")
        assert await page.get_attribute('[data-verdict="tie"]', "aria-pressed") == "true"
        assert await _pressed(page) == []
        await _submit(page, recorder, lambda: page.keyboard.press("Enter"))

        # 3: three answers ranked with 3 then 1; the remaining one comes last.
        task = await _take(page, lambda: page.keyboard.press("Enter"))
        assert task["comparison_id"] == "page-3" and len(task["candidates"]) == 3
        texts[task["comparison_id"]] = await _shown(page)
        await page.keyboard.press("3")
        await page.keyboard.press("1")
        assert "#3" in await page.inner_text('#candidates [data-position="2"]')
        await _submit(page, recorder, lambda: page.click("#compare-submit"))

        # 4: a click picks, then B says both are bad instead.
        task = await _take(page, lambda: page.click("#compare-next"))
        texts[task["comparison_id"]] = await _shown(page)
        await page.click('#candidates [data-position="2"]')
        assert await _pressed(page) == ["2"]
        await page.keyboard.press("b")
        assert await _pressed(page) == []
        await _submit(page, recorder, lambda: page.keyboard.press("Enter"))

        # Nothing left: said so; Escape goes back to labeling.
        async with page.expect_response(_is_next) as info:
            await page.keyboard.press("n")
        assert (await info.value).status == 204
        await page.locator("#compare-none").wait_for(state="visible")
        assert "No comparison is waiting" in await page.inner_text("#compare-none")
        await page.keyboard.press("Escape")
        await page.locator("#idle").wait_for(state="visible")
        assert await page.locator("#compare").is_hidden()
        await browser.close()

    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    async with engine.connect() as conn:
        rows = {r.item_id: r for r in (await conn.execute(select(label_events).where(
            label_events.c.project == project))).all()}
    assert set(rows) == {"page-1", "page-2", "page-3", "page-4"}
    for item_id, row in rows.items():
        pref = row.preference
        # The order stored is the order the page showed.
        assert [pref["texts"][c] for c in pref["shown_order"]] == texts[item_id]
        assert row.labeler_id == "cora" and row.mode == "comparison"
        assert row.duration_ms is not None and row.duration_ms >= 0
    one = rows["page-1"].preference
    assert rows["page-1"].label == one["shown_order"][0] and one["reason"] == "more precise"
    assert rows["page-2"].label == "__tie__" and rows["page-4"].label == "__both_bad__"
    three = rows["page-3"].preference["shown_order"]
    assert rows["page-3"].label == ">".join([three[2], three[0], three[1]])
    assert json.dumps(rows["page-1"].preference["models"], sort_keys=True) == json.dumps(
        {IDS[0]: MODELS[0], IDS[1]: MODELS[1]}, sort_keys=True)


def _failing(answer: dict | None):
    """A route handler answering ``answer`` in the router's place (None: unreachable)."""
    async def handle(route) -> None:
        if answer is None:
            await route.abort("connectionrefused")
        else:
            await route.fulfill(**answer)
    return handle


async def test_a_failing_router_reads_as_a_sentence_on_the_comparison_page(
        services, engine, redis, project):
    """The comparison page speaks through api.js like the labeling page: a 500 without a
    body, a 503 and an unreachable router each read as what to do, never as "the server
    answered 500", and the judgment is kept for another try."""
    from playwright.async_api import async_playwright, expect

    chromium = _chromium()
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 1})
    async with client(services, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/comparisons",
                            json={"comparisons": [_comparison(1, 2, 1.0)]})
        assert r.status_code == 202, r.text
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    bearer = await token(engine, "flo", "labeler", project)
    answers = [  # what the browser gets instead of the router's answer to each submit
        ({"status": 500, "body": "Internal Server Error", "content_type": "text/plain"},
         "The router failed on this request (500)"),
        ({"status": 503, "json": {"detail": "Redis is unavailable right now; try again in "
                                             "a moment"}, "headers": {"Retry-After": "5"}},
         "Redis is unavailable right now"),
        (None, "Cannot reach the router"),
    ]
    async with async_playwright() as playwright:
        browser = await _browser(playwright, chromium)
        page = await browser.new_page(viewport={"width": 1100, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(services.url_of("router") + "/")
        await page.fill("#token", bearer)
        await page.fill("#project", project)
        async with page.expect_response(lambda r: "/tasks/next" in r.url):
            await page.click("#login button[type=submit]")
        await page.locator("#idle-text").wait_for(state="visible")
        await _take(page, lambda: page.keyboard.press("p"))
        await page.keyboard.press("2")
        for answer, says in answers:
            await page.route("**/v1/comparisons/*/submit", _failing(answer))
            await page.keyboard.press("Enter")
            error = page.locator("#error")
            await expect(error).to_contain_text(says, timeout=10_000)
            message = await error.inner_text()
            assert "server answered" not in message and "try again" in message.lower()
            assert await _pressed(page) == ["2"]  # the judgment is kept
            await page.unroute("**/v1/comparisons/*/submit")
        # The router back: the same judgment goes through.
        async with page.expect_response(lambda r: r.url.endswith("/submit")) as info:
            await page.keyboard.press("Enter")
        assert (await info.value).status == 200
        await page.locator("#compare-reveal").wait_for(state="visible")
        assert errors == []
        await browser.close()
