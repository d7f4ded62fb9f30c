"""The reviewer page in a real headless Chromium, against the four real service processes.

A labeler signs in with a bearer token, labels digits with the keyboard and the
mouse, changes an answer after the reveal, skips one, and runs out of work. Blind
mode is checked the hard way: before every submit, neither the page nor any
data the browser has received holds the model's guess for the task on screen.
The stored label events carry the labeler, the task, the mode and the time taken.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sklearn.datasets import load_digits
from sqlalchemy import select

from services.labels.tables import label_events
from shared import streams
from shared.events import NONE_OF_THESE
from tests.conftest import ROOT
from tests.helpers import configure, groups_idle, token

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = ROOT / "var" / "screenshots"
MODEL = "m-web"
# The guess's words as the API spells them; a blind task's data must contain none of them.
GUESS_WORDS = ("model_label", "confidence", "probs")
# Distinct top probabilities (all below the 0.9 threshold), so each can be searched for.
TOP_PROBS = (0.61734, 0.58219, 0.66481, 0.54372, 0.70916, 0.63158, 0.57743)


def _chromium() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    message = (f"{CHROMIUM} is missing: the reviewer page test drives the system's Chromium "
               "(install it with `apt-get install chromium`)")
    if os.environ.get("LOOPWISE_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message + " (LOOPWISE_REQUIRE_INTEGRATION=1: integration tests must run)")
    pytest.skip(message)


def _distribution(top_label: str, top: float, second: str | None = None,
                  second_p: float = 0.0) -> dict[str, float]:
    """Probabilities over the ten digits with ``top`` on ``top_label``."""
    others = [str(d) for d in range(10) if str(d) not in (top_label, second)]
    rest = round((1.0 - top - second_p) / len(others), 6)
    probs = {d: rest for d in others}
    probs[top_label] = top
    if second is not None:
        probs[second] = second_p
    return probs


def _digit_predictions(project: str) -> dict[str, dict]:
    """Real 8x8 digits (values 0..16); the model's guess is wrong on every third."""
    digits = load_digits()
    predictions = {}
    for i, top in enumerate(TOP_PROBS):
        truth = str(int(digits.target[i]))
        guess = truth if i % 3 else str((int(truth) + 1) % 10)
        item_id = f"web-{i}"
        predictions[item_id] = {
            "project": project, "item_id": item_id, "model_version": MODEL,
            "probs": _distribution(guess, top),
            "payload": {"image": digits.images[i].astype(int).tolist()},
            "truth": truth, "guess": guess, "top": top,
        }
    return predictions


async def _publish(redis, predictions: dict[str, dict]) -> None:
    for body in predictions.values():
        wire = {k: v for k, v in body.items() if k not in ("truth", "guess", "top")}
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(wire)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))


async def _browser(playwright, executable: str):
    return await playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)


class Recorder:
    """Every response the page receives, in order, with its body."""

    def __init__(self) -> None:
        self.responses: list = []

    def on_response(self, response) -> None:
        self.responses.append(response)

    async def bodies(self) -> list[tuple[str, int, str]]:
        out = []
        for response in self.responses:
            try:
                text = (await response.body()).decode("utf-8", "replace")
            except Exception:  # a body the browser no longer holds cannot leak anything
                text = ""
            out.append((response.url, response.status, text))
        return out


def _is_next_url(url: str) -> bool:
    return "/tasks/next" in url


def _is_next(response) -> bool:
    return _is_next_url(response.url)


async def _assert_blind(page, recorder: Recorder, task: dict, prediction: dict,
                        api_since: int, picked: str | None = None) -> None:
    """Nothing on the page and nothing received holds the model's guess for ``task``;
    the only option marked is the one the labeler ``picked``, if any."""
    top = prediction["top"]
    forms = (repr(top), f"{top * 100:.1f}", f"{round(top * 100)}%")
    dom = await page.content()
    for text in forms:
        assert text not in dom, f"the page shows the model's confidence {text} before submit"
    for word in GUESS_WORDS:
        assert word not in dom, f"the page holds {word!r} before submit"
    received = await recorder.bodies()
    for url, _, body in received:
        for text in forms[:1]:
            assert text not in body, f"{url} carried the model's confidence before submit"
    # The data received since the last reveal: the API's answers (the page's own
    # code, served as static files, names the reveal's fields but holds no data).
    for url, code, body in received[api_since:]:
        if "/v1/" not in url:
            continue
        for word in GUESS_WORDS:
            assert word not in body, f"{url} carried {word!r} before submit: {body}"
        if _is_next_url(url) and code == 200:
            assert json.loads(body)["prelabel"] is None
    assert task["prelabel"] is None and task["mode"] == "blind"
    pressed = page.locator('#options [aria-pressed="true"]')
    assert [await b.get_attribute("data-label") for b in await pressed.all()] == (
        [picked] if picked else [])
    assert await page.locator("#hint").is_hidden()


async def _next_task(page, trigger) -> dict:
    """Run ``trigger`` (a key press or click), return the task the page then shows."""
    async with page.expect_response(_is_next) as info:
        await trigger()
    response = await info.value
    assert response.status == 200, await response.text()
    task = await response.json()
    await page.locator(f'#task[data-task-id="{task["task_id"]}"]').wait_for(state="visible")
    return task


async def test_a_labeler_labels_blind_through_the_page_and_the_labels_are_stored(
    services, engine, redis, project
):
    from playwright.async_api import async_playwright

    chromium = _chromium()
    settings = services
    predictions = _digit_predictions(project)
    await _publish(redis, predictions)
    bearer = await token(engine, "wendy", "labeler", project)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    submitted: dict[str, str] = {}  # task_id -> label
    revised: dict[str, str] = {}
    async with async_playwright() as playwright:
        browser = await _browser(playwright, chromium)
        page = await browser.new_page(viewport={"width": 1100, "height": 720})
        recorder = Recorder()
        page.on("response", recorder.on_response)
        await page.goto(settings.url_of("router") + "/")
        assert await page.title() == "loopwise · review"

        # A wrong token: the API's message is shown and the form stays.
        await page.fill("#token", "lw_not_a_token")
        await page.fill("#project", project)
        await page.click("#login button[type=submit]")
        await page.locator("#error").wait_for(state="visible")
        assert "invalid, expired or revoked token" in await page.inner_text("#error")
        assert await page.locator("#login").is_visible()

        await page.fill("#token", bearer)
        await page.fill("#project", project)
        task = await _next_task(page, lambda: page.click("#login button[type=submit]"))
        assert await page.evaluate("sessionStorage.getItem('loopwise.token')") == bearer

        # Five by keyboard, one by mouse (then changed after the reveal), one skipped.
        plan = ["keys", "keys", "mouse", "keys", "keys", "keys", "skip"]
        api_since = 0
        for step, how in enumerate(plan):
            prediction = predictions[task["item_id"]]
            assert task["options"] == [str(d) for d in range(10)]
            canvas = page.locator("#example canvas.pixels")
            assert await canvas.count() == 1
            assert await canvas.evaluate("c => [c.width, c.height, c.clientWidth]") == [8, 8, 320]
            await _assert_blind(page, recorder, task, prediction, api_since)

            if how == "skip":
                async with page.expect_response(lambda r: "/skip" in r.url) as skipped:
                    async with page.expect_response(_is_next) as after_skip:
                        await page.keyboard.press("s")
                assert (await skipped.value).status == 200
                assert (await after_skip.value).status == 204  # nothing else is waiting
                await page.locator("#idle").wait_for(state="visible")
                assert "No task is waiting" in await page.inner_text("#idle")
                break

            truth = prediction["truth"]
            if how == "keys":
                await page.keyboard.press(truth)
            else:
                await page.click(f'#options button[data-label="{truth}"]')
            assert await page.get_attribute(
                f'#options button[data-label="{truth}"]', "aria-pressed") == "true"
            if step == 0:
                await page.screenshot(path=str(SCREENSHOTS / "reviewer.png"))
            await _assert_blind(page, recorder, task, prediction, api_since, picked=truth)

            async with page.expect_response(lambda r: "/submit" in r.url) as info:
                if how == "keys":
                    await page.keyboard.press("Enter")
                else:
                    await page.click("#submit")
            response = await info.value
            assert response.status == 200, await response.text()
            reveal = (await response.json())["reveal"]
            assert reveal == {"model_label": prediction["guess"], "confidence": prediction["top"],
                              "model_version": MODEL}
            submitted[task["task_id"]] = truth

            # The reveal: the model's label, its confidence and its version.
            await page.locator("#reveal").wait_for(state="visible")
            shown = await page.inner_text("#reveal")
            assert f"The model said {prediction['guess']}" in shown
            assert f"{prediction['top'] * 100:.1f}% confidence" in shown
            assert MODEL in shown
            assert ("you agree" in shown) == (prediction["guess"] == truth)
            if step == 0:
                await page.screenshot(path=str(SCREENSHOTS / "reviewer-reveal.png"))

            if how == "mouse":  # change the answer after the reveal, by mouse
                other = str((int(truth) + 5) % 10)
                await page.click("#change")
                await page.click(f'#options button[data-label="{other}"]')
                async with page.expect_response(lambda r: "/revise" in r.url) as info:
                    await page.click("#submit")
                assert (await info.value).status == 200
                await page.locator("#reveal .changed").wait_for(state="visible")
                assert f"Changed your answer to {other}" in await page.inner_text("#reveal")
                revised[task["task_id"]] = other

            api_since = len(recorder.responses)
            key = "n" if step % 2 else "Enter"
            if how == "mouse":
                task = await _next_task(page, lambda: page.click("#next"))
            else:
                task = await _next_task(page, lambda k=key: page.keyboard.press(k))
            # The previous reveal is gone before the new task is judged.
            assert await page.locator("#reveal").is_hidden()
            assert await page.locator("#reveal > *").count() == 0

        # A pause from the quality service is shown with the API's message.
        flag = {"project": project, "type": "labeler_flag", "labeler_id": "wendy",
                "pause": True, "statistic": 9.1, "threshold": 8.0, "tasks_in_evidence": 40}
        await redis.xadd(streams.QUALITY, {"data": json.dumps(flag)})
        await groups_idle(redis, (streams.QUALITY, streams.GROUP_ROUTER))
        async with page.expect_response(_is_next) as info:
            await page.keyboard.press("n")
        assert (await info.value).status == 423
        await page.locator("#error").wait_for(state="visible")
        assert "paused" in await page.inner_text("#error")
        await browser.close()

    assert len(submitted) == 6 and len(revised) == 1
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    async with engine.connect() as conn:
        rows = (await conn.execute(select(label_events).where(
            label_events.c.project == project, label_events.c.source == "human"))).all()
    firsts = {r.task_id: r for r in rows if not r.revised_after_reveal}
    changes = {r.task_id: r for r in rows if r.revised_after_reveal}
    assert {t: r.label for t, r in firsts.items()} == submitted
    assert {t: r.label for t, r in changes.items()} == revised
    for row in rows:
        assert row.labeler_id == "wendy" and row.source == "human" and row.mode == "blind"
        assert row.shown_prelabel is None and row.model_version == MODEL
    for row in firsts.values():
        assert row.duration_ms is not None and row.duration_ms >= 0
    for task_id, row in changes.items():
        assert row.supersedes == str(firsts[task_id].event_id)


async def test_prelabel_hint_is_never_preselected_and_choice_offers_none_of_these(
    services, engine, redis, project
):
    from playwright.async_api import async_playwright

    chromium = _chromium()
    settings = services
    admin = await token(engine, "ada", "admin", project)
    await configure(settings, admin, project, routing={"mode": "prelabel", "choice_margin": 0.1})
    digits = load_digits()
    clear = {"project": project, "item_id": "clear", "model_version": MODEL,
             "probs": _distribution("7", 0.8), "payload": {"text": "a clear seven"}}
    close = {"project": project, "item_id": "close", "model_version": MODEL,
             "probs": _distribution("3", 0.45, "8", 0.4),
             "payload": {"image": digits.images[3].astype(int).tolist(), "source": "scan-17"}}
    for body in (clear, close):
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))
    bearer = await token(engine, "pat", "labeler", project)

    async with async_playwright() as playwright:
        browser = await _browser(playwright, chromium)
        page = await browser.new_page(viewport={"width": 1100, "height": 720})
        await page.goto(settings.url_of("router") + "/")
        await page.fill("#token", bearer)
        await page.fill("#project", project)
        # The closer call is the more uncertain: it comes first, as a choice.
        task = await _next_task(page, lambda: page.click("#login button[type=submit]"))
        assert task["item_id"] == "close" and task["mode"] == "choice"
        assert task["options"][-1] == NONE_OF_THESE
        buttons = page.locator("#options button.option")
        assert await buttons.count() == len(task["options"])
        assert "none of these" in await buttons.last.inner_text()
        assert "scan-17" in await page.inner_text("#example dl.fields")  # other fields: metadata
        none_key = (await buttons.last.locator("kbd").inner_text()).strip()
        assert none_key not in task["options"]  # a digit label keeps its own digit
        await page.keyboard.press(none_key)
        assert await buttons.last.get_attribute("aria-pressed") == "true"
        await page.screenshot(path=str(SCREENSHOTS / "reviewer-choice.png"))
        async with page.expect_response(lambda r: "/submit" in r.url) as info:
            await page.keyboard.press("Enter")
        assert (await info.value).status == 200
        await page.locator("#reveal").wait_for(state="visible")

        task = await _next_task(page, lambda: page.keyboard.press("n"))
        assert task["item_id"] == "clear" and task["mode"] == "prelabel"
        assert task["prelabel"] == "7"
        assert "a clear seven" in await page.inner_text("#example")
        assert "Model's suggestion: 7" in await page.inner_text("#hint")
        assert await page.locator('#options [aria-pressed="true"]').count() == 0
        assert await page.locator("#submit").is_disabled()
        await page.keyboard.press("Enter")  # nothing picked: nothing is sent
        assert "Pick a label first" in await page.inner_text("#status")
        await page.screenshot(path=str(SCREENSHOTS / "reviewer-prelabel.png"))
        await page.keyboard.press("1")
        async with page.expect_response(lambda r: "/submit" in r.url) as info:
            await page.keyboard.press("Enter")
        assert (await info.value).status == 200
        await page.locator("#reveal").wait_for(state="visible")
        await browser.close()

    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    async with engine.connect() as conn:
        rows = {r.item_id: r for r in (await conn.execute(select(label_events).where(
            label_events.c.project == project, label_events.c.source == "human"))).all()}
    assert rows["close"].label == NONE_OF_THESE and rows["close"].mode == "choice"
    assert rows["clear"].label == "1" and rows["clear"].mode == "prelabel"
    assert rows["clear"].shown_prelabel == "7" and rows["clear"].agreed_with_prelabel is False
