"""Screenshots of the reviewer page compared with committed reference PNGs.

A layout change shows as pixels that differ; font hinting and anti-aliasing differ a
little between machines, so a screenshot passes when at most ``TOLERANCE`` of its pixels
differ by more than ``PIXEL_THRESHOLD`` (of 255, in any channel) from the reference.
Parts that change from run to run (the random project name) are masked.

Refresh the references after an intended change of the page (then look at them and
commit them):

    LOOPWISE_UPDATE_SCREENSHOTS=1 .venv/bin/pytest -q tests/router/test_web_page.py

A failing comparison writes the screenshot and a diff image (differing pixels in red)
under ``var/screenshots/`` to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageChops

REFERENCES = Path(__file__).resolve().parent / "screenshots"
OUT = Path(__file__).resolve().parents[2] / "var" / "screenshots"
TOLERANCE = 0.02  # share of pixels allowed to differ
PIXEL_THRESHOLD = 48  # a pixel differs when a channel moves by more than this


def differing_share(actual: Image.Image, reference: Image.Image) -> tuple[float, Image.Image]:
    """The share of pixels that differ beyond the threshold, and a mask of them."""
    diff = ImageChops.difference(actual.convert("RGB"), reference.convert("RGB"))
    channels = diff.split()
    worst = ImageChops.lighter(ImageChops.lighter(channels[0], channels[1]), channels[2])
    mask = worst.point(lambda v: 255 if v > PIXEL_THRESHOLD else 0)
    histogram = mask.histogram()
    changed = histogram[255]
    return changed / (actual.width * actual.height), mask


async def assert_looks_like(page, name: str, mask: list | None = None) -> None:
    """The page as it is now matches ``screenshots/{name}.png`` within the tolerance."""
    OUT.mkdir(parents=True, exist_ok=True)
    actual_path = OUT / f"{name}.png"
    await page.screenshot(path=str(actual_path), mask=mask or [], animations="disabled",
                          caret="hide")
    reference_path = REFERENCES / f"{name}.png"
    if os.environ.get("LOOPWISE_UPDATE_SCREENSHOTS") == "1":
        REFERENCES.mkdir(parents=True, exist_ok=True)
        reference_path.write_bytes(actual_path.read_bytes())
        return
    if not reference_path.exists():
        pytest.fail(f"no reference screenshot {reference_path}: run with "
                    "LOOPWISE_UPDATE_SCREENSHOTS=1, look at it and commit it")
    with Image.open(actual_path) as actual, Image.open(reference_path) as reference:
        assert actual.size == reference.size, (
            f"{name}: screenshot {actual.size} but reference {reference.size}")
        share, changed = differing_share(actual, reference)
        if share > TOLERANCE:
            red = Image.new("RGB", actual.size, (220, 0, 0))
            overlay = Image.composite(red, actual.convert("RGB"), changed)
            overlay.save(OUT / f"{name}-diff.png")
    assert share <= TOLERANCE, (
        f"{name}: {share:.2%} of the pixels differ from {reference_path} (at most "
        f"{TOLERANCE:.0%}); see {OUT / (name + '-diff.png')}, and refresh the reference "
        "with LOOPWISE_UPDATE_SCREENSHOTS=1 if the change is intended")
