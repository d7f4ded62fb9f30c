"""The reviewer page shows items as producers send them, in a real headless Chromium.

Against the four real service processes (and, for the outage, a router of the test's own
on a Redis of its own): an image from a URL and from base64, a ``features`` vector drawn
as an image because the project declares ``review.display: "image 8x8"``, text with its
metadata, the guideline's text and version, progress (labeled today, left in the queue),
a reload that shows the task the labeler holds, and a sentence naming Redis when Redis is
down. All of it by keyboard, in blind mode (the project's default), with no model output
on the page or in what it received before the submit. Where layout matters the page is
compared with the committed screenshots (``tests/router/visual.py``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis.asyncio as aioredis
from PIL import Image

from shared import streams
from tests.conftest import PORT_BASE, ROOT, service_env
from tests.helpers import configure, groups_idle, require_tool, token
from tests.router.test_web import GUESS_WORDS, Recorder, _browser, _chromium, _is_next
from tests.router.visual import assert_looks_like

pytestmark = pytest.mark.integration

DIGITS = [str(d) for d in range(10)]
GUIDELINE = ("Label the digit you see, not the one you expect.\n\n"
             "If two digits are equally likely, skip the task.")
IMAGE_PORT = PORT_BASE + 72  # the producer's image host, for the URL case
PRIVATE_REDIS_PORT = PORT_BASE + 70
PRIVATE_ROUTER_PORT = PORT_BASE + 71
WAIT_MS = 30_000  # how long a check waits for the page to show what it expects
# Top probabilities of the four items, all below the auto-accept threshold and distinct,
# so that none of them can appear in a blind page by accident.
TOP = {"by-url": 0.41873, "by-base64": 0.46219, "by-features": 0.52917, "by-text": 0.57351}
# A digit's 8x8 features, row by row: ink (16) down the left column and along the top
# row, so a drawing that swapped rows and columns or misread the shape would show it.
FEATURES = [16.0 if (i < 8 or i % 8 == 0) else 0.0 for i in range(64)]
FEATURES[9] = 8.0  # row 1, column 1: half ink


def _png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


class _ImageHost:
    """The producer's image server: one PNG at /scan.png, on loopback."""

    def __init__(self, port: int, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/scan.png":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/scan.png"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _distribution(top: float) -> dict[str, float]:
    """The model's guess: ``top`` on 7, the rest spread over the other digits."""
    rest = round((1.0 - top) / 9, 6)
    return {d: (top if d == "7" else rest) for d in DIGITS}


def _payloads(image_url: str) -> dict[str, dict]:
    return {
        "by-url": {"image": image_url, "source": "scanner-3"},
        "by-base64": {"image": base64.b64encode(_png(24, 16, (20, 60, 200))).decode()},
        "by-features": {"features": FEATURES},
        "by-text": {"text": "The cheque says seven, in a hurried hand.", "lang": "en",
                    "source": "forum-42", "tags": ["handwriting", "bank"]},
    }


async def _declare(settings, engine, project: str) -> None:
    """Digits, a guideline with its version, features drawn as 8x8 images, no gold (so the
    queue's depth is shown exactly); the default mode (blind) is kept."""
    admin = await token(engine, f"admin-{project}", "admin", project)
    await configure(settings, admin, project, label_options=DIGITS,
                    routing={"gold_rate": 0.0, "guideline_version": "g-7"},
                    review={"display": "image 8x8", "guideline": GUIDELINE})


async def _predict(redis, project: str, payloads: dict[str, dict],
                   shards: int | None = None) -> None:
    for item_id, payload in payloads.items():
        body = {"project": project, "item_id": item_id, "model_version": "m-page",
                "probs": _distribution(TOP[item_id]), "payload": payload}
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER), shards=shards)


async def _sign_in(page, url: str, bearer: str, project: str) -> dict:
    await page.goto(url + "/")
    await page.fill("#token", bearer)
    await page.fill("#project", project)
    async with page.expect_response(_is_next) as info:
        await page.press("#project", "Enter")  # the form submits from the keyboard too
    response = await info.value
    assert response.status == 200, await response.text()
    task = await response.json()
    await page.locator(f'#task[data-task-id="{task["task_id"]}"]').wait_for(state="visible")
    return task


async def _nothing_of_the_model(page, recorder: Recorder, since: int) -> None:
    """Blind: neither the page nor the API answers it received since ``since`` hold a
    model output (its words, or any item's top probability)."""
    dom = await page.content()
    numbers = [repr(p) for p in TOP.values()] + [f"{p * 100:.1f}" for p in TOP.values()]
    for text in [*GUESS_WORDS, *numbers]:
        assert text not in dom, f"the page holds {text!r} before the submit"
    for url, _, body in (await recorder.bodies())[since:]:
        if "/v1/" in url:
            for text in [*GUESS_WORDS, *numbers[:len(TOP)]]:
                assert text not in body, f"{url} carried {text!r} before the submit"


async def _progress_says(page, text: str) -> None:
    from playwright.async_api import expect

    await expect(page.locator("#progress")).to_have_text(text, timeout=WAIT_MS)


async def _pixel(canvas, x: int, y: int) -> int:
    """The grey level (0 ink .. 255 paper) of one pixel of a drawn matrix."""
    return await canvas.evaluate(
        "(c, [x, y]) => c.getContext('2d').getImageData(x, y, 1, 1).data[0]", [x, y])


async def _check_shown(page, item_id: str, image_url: str) -> None:
    """The item is drawn as its payload says."""
    box = page.locator("#example")
    if item_id in ("by-url", "by-base64"):
        img = box.locator("img.photo")
        await img.wait_for(state="visible")
        await page.wait_for_function(
            "() => { const i = document.querySelector('#example img.photo');"
            " return i && i.complete && i.naturalWidth > 0; }")
        src, size = await img.evaluate("i => [i.src, [i.naturalWidth, i.naturalHeight]]")
        if item_id == "by-url":
            assert src == image_url and size == [40, 30]
            assert "scanner-3" in await box.locator("dl.fields").inner_text()
        else:
            assert src.startswith("data:image/png;base64,iVBORw0KGgo") and size == [24, 16]
            assert await box.locator("dl.fields").count() == 0  # nothing else in the payload
        assert await box.locator("canvas").count() == 0
    elif item_id == "by-features":
        canvas = box.locator("canvas.pixels")
        assert await canvas.count() == 1
        assert await canvas.evaluate("c => [c.width, c.height]") == [8, 8]
        assert "features drawn as an image" in (await canvas.get_attribute("aria-label"))
        assert await _pixel(canvas, 0, 0) == 0 and await _pixel(canvas, 7, 0) == 0  # top row
        assert await _pixel(canvas, 0, 7) == 0  # left column
        assert await _pixel(canvas, 7, 7) == 255 and await _pixel(canvas, 1, 2) == 255
        assert await _pixel(canvas, 1, 1) in (127, 128)  # half ink
        assert "16, 16" not in await box.inner_text()  # not the numbers as a list
    else:
        assert (await box.locator("p.text").inner_text()) == \
            "The cheque says seven, in a hurried hand."
        fields = {await row.locator("dt").inner_text(): await row.locator("dd").inner_text()
                  for row in await box.locator("dl.fields div.field").all()}
        assert fields == {"lang": "en", "source": "forum-42", "tags": "handwriting, bank"}


async def test_items_are_shown_as_sent_with_guideline_and_progress_by_keyboard_blind(
    services, engine, redis, project
):
    from playwright.async_api import async_playwright

    chromium = _chromium()
    settings = services
    host = _ImageHost(IMAGE_PORT, _png(40, 30, (200, 40, 40)))
    try:
        await _declare(settings, engine, project)
        payloads = _payloads(host.url)
        await _predict(redis, project, payloads)
        bearer = await token(engine, "una", "labeler", project)
        async with async_playwright() as playwright:
            browser = await _browser(playwright, chromium)
            page = await browser.new_page(viewport={"width": 1100, "height": 760})
            recorder = Recorder()
            page.on("response", recorder.on_response)
            task = await _sign_in(page, settings.url_of("router"), bearer, project)

            # The guideline beside the task: its paragraphs as text, and its version.
            await page.locator("#panel").wait_for(state="visible")
            paragraphs = await page.locator("#guideline-text p").all_inner_texts()
            assert paragraphs == GUIDELINE.split("\n\n")
            assert await page.inner_text("#guideline-version") == "version g-7"
            await page.keyboard.press("g")  # G folds it away and back
            assert await page.locator("#guideline").get_attribute("open") is None
            await page.keyboard.press("g")
            assert await page.locator("#guideline").get_attribute("open") == ""

            seen: list[str] = []
            since = 0
            for done in range(len(payloads)):
                item_id = task["item_id"]
                seen.append(item_id)
                assert task["mode"] == "blind" and task["prelabel"] is None
                left = len(payloads) - done - 1
                waiting = f"{left} waiting" if left else "none waiting"
                await _progress_says(page, f"{done} labeled today · {waiting}")
                await _check_shown(page, item_id, host.url)
                await _nothing_of_the_model(page, recorder, since)
                if item_id in ("by-features", "by-text"):  # layouts that matter
                    # the random project name, as one of a fixed width (the header's
                    # layout is compared too); the progress depends on the order
                    await page.evaluate("document.getElementById('session-project')"
                                        ".textContent = 'digits-under-test'")
                    await assert_looks_like(page, f"review-{item_id}",
                                            mask=[page.locator("#progress")])
                await page.keyboard.press("7")
                async with page.expect_response(lambda r: "/submit" in r.url) as info:
                    await page.keyboard.press("Enter")
                assert (await info.value).status == 200
                await page.locator("#reveal").wait_for(state="visible")
                await _progress_says(page, f"{done + 1} labeled today · {waiting}")
                since = len(recorder.responses)
                if left:
                    async with page.expect_response(_is_next) as nxt:
                        await page.keyboard.press("n")
                    task = await (await nxt.value).json()
                    await page.locator(
                        f'#task[data-task-id="{task["task_id"]}"]').wait_for(state="visible")
            assert sorted(seen) == sorted(payloads)
            async with page.expect_response(_is_next) as nxt:
                await page.keyboard.press("n")
            assert (await nxt.value).status == 204
            await _progress_says(page, "4 labeled today · none waiting")
            await browser.close()
    finally:
        host.close()


async def test_a_reload_shows_the_task_the_labeler_holds(services, engine, redis, project):
    from playwright.async_api import async_playwright

    chromium = _chromium()
    settings = services
    await _declare(settings, engine, project)
    payloads = _payloads("http://127.0.0.1:1/never.png")
    await _predict(redis, project, {k: payloads[k] for k in ("by-features", "by-text")})
    bearer = await token(engine, "vic", "labeler", project)
    async with async_playwright() as playwright:
        browser = await _browser(playwright, chromium)
        page = await browser.new_page(viewport={"width": 1100, "height": 760})
        held = await _sign_in(page, settings.url_of("router"), bearer, project)
        for _ in range(2):  # a reload, and another: the same task, the same lease
            async with page.expect_response(_is_next) as info:
                await page.reload()
            response = await info.value
            assert response.status == 200
            again = await response.json()
            assert again["task_id"] == held["task_id"]
            assert again["lease_expires_at"] == held["lease_expires_at"]
            await page.locator(f'#task[data-task-id="{held["task_id"]}"]').wait_for(
                state="visible")
        assert "1 waiting" in await page.inner_text("#progress")  # the other is not leased
        # Once answered, the next call leases the other task.
        await page.keyboard.press("3")
        async with page.expect_response(lambda r: "/submit" in r.url) as submitted:
            await page.keyboard.press("Enter")
        assert (await submitted.value).status == 200
        async with page.expect_response(_is_next) as info:
            await page.reload()
        other = await (await info.value).json()
        assert other["item_id"] != held["item_id"]
        assert {other["item_id"], held["item_id"]} == {"by-features", "by-text"}
        await browser.close()


class _PrivateRouter:
    """A redis-server and a router process of this test's own: stopping that Redis
    touches no other test. The router shares the session's database (tokens)."""

    def __init__(self, settings) -> None:
        server = require_tool("redis-server", "redis-server")
        self.dir = tempfile.mkdtemp(prefix="loopwise-web-redis-")
        self.redis_url = f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}/0"
        self.url = f"http://127.0.0.1:{PRIVATE_ROUTER_PORT}"
        self.redis = subprocess.Popen(
            [server, "--port", str(PRIVATE_REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = {**os.environ, **service_env(settings), "LOOPWISE_REDIS_URL": self.redis_url,
               "LOOPWISE_ROUTER_PORT": str(PRIVATE_ROUTER_PORT)}
        log = ROOT / "var" / "test-logs" / "web-page-router.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log, "wb")
        self.router = subprocess.Popen([sys.executable, "-m", "loopwise", "serve", "router"],
                                       env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while not self._healthy():
            assert self.router.poll() is None, f"the private router exited; see {log}"
            assert time.monotonic() < deadline, f"the private router is not up; see {log}"
            time.sleep(0.3)

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_redis(self) -> None:
        self.redis.kill()
        self.redis.wait(10)

    def close(self) -> None:
        for proc in (self.router, self.redis):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.log.close()


async def test_with_redis_down_the_labeler_reads_what_is_wrong_and_keeps_the_pick(
    services, engine, project
):
    from playwright.async_api import async_playwright, expect

    chromium = _chromium()
    private = _PrivateRouter(services)
    try:
        redis = aioredis.from_url(private.redis_url)
        try:
            await _predict(redis, project, {"by-text": _payloads("")["by-text"]},
                           shards=1)  # the private Redis is a single one
        finally:
            await redis.aclose()
        bearer = await token(engine, "wes", "labeler", project)
        async with async_playwright() as playwright:
            browser = await _browser(playwright, chromium)
            page = await browser.new_page(viewport={"width": 1100, "height": 760})
            await _sign_in(page, private.url, bearer, project)
            private.stop_redis()

            await page.keyboard.press("4")
            async with page.expect_response(lambda r: "/submit" in r.url) as info:
                await page.keyboard.press("Enter")
            response = await info.value
            assert response.status == 503 and response.headers.get("retry-after")
            error = page.locator("#error")
            await expect(error).to_be_visible(timeout=WAIT_MS)
            message = await error.inner_text()
            assert "Redis is unavailable right now" in message and "try again" in message
            assert "500" not in message and "server answered" not in message
            assert "your pick is kept" in await page.inner_text("#status")
            pressed = page.locator('#options [aria-pressed="true"]')
            assert [await b.get_attribute("data-label") for b in await pressed.all()] == ["4"]

            # A reload meanwhile: the sign-in is kept and the outage is named, not a 500.
            async with page.expect_response(_is_next) as info:
                await page.reload()
            assert (await info.value).status == 503
            await expect(page.locator("#idle-title")).to_have_text("Service unavailable",
                                                                  timeout=WAIT_MS)
            assert "Redis is unavailable" in await page.inner_text("#error")
            assert "Nothing was lost" in await page.inner_text("#idle-text")
            await browser.close()
    finally:
        private.close()
