"""Screenshots of the reviewer page compared with committed reference PNGs.

A layout change shows as pixels that differ; font hinting and anti-aliasing differ a
little between machines and Chromium builds, on the edges of glyphs only. So both images
are turned grey and blurred by one pixel (``BoxBlur(1)``: an edge that moved by a
sub-pixel, or a glyph drawn a shade lighter, changes by a few levels; a box, a line of text
or an image that moved by a few pixels still changes by more than a hundred), and a
screenshot passes when at most ``TOLERANCE`` of its pixels differ by more than
``PIXEL_THRESHOLD`` (of 255) from the reference, and no 32x32 tile has more than
``TILE_TOLERANCE`` of its pixels differing (a small change, a word gone or a button
moved, is dense in a few tiles; rasteriser noise is thin everywhere). Parts that change
from run to run (the random project name) are masked.

Refresh the references after an intended change of the page (then look at them and
commit them):

    LOOPWISE_UPDATE_SCREENSHOTS=1 .venv/bin/pytest -q tests/router/test_web_page.py

A failing comparison writes the screenshot and a diff image (differing pixels in red)
under ``var/screenshots/`` to look at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFilter

REFERENCES = Path(__file__).resolve().parent / "screenshots"
OUT = Path(__file__).resolve().parents[2] / "var" / "screenshots"
TOLERANCE = 0.005  # share of pixels allowed to differ (0.5%: about 4,000 of 1100x760)
PIXEL_THRESHOLD = 40  # a pixel differs when its blurred grey level moves by more than this
TILE = 32  # side of the tiles in which differing pixels are also counted
TILE_TOLERANCE = 0.08  # share of a tile's pixels allowed to differ


def _softened(image: Image.Image) -> Image.Image:
    return image.convert("L").filter(ImageFilter.BoxBlur(1))


@dataclass(frozen=True)
class Comparison:
    share: float  # of all pixels, those that differ
    worst_tile: float  # of the pixels of the worst tile, those that differ
    mask: Image.Image  # 255 where a pixel differs

    @property
    def passes(self) -> bool:
        return self.share <= TOLERANCE and self.worst_tile <= TILE_TOLERANCE

    def __str__(self) -> str:
        return (f"{self.share:.2%} of the pixels differ (at most {TOLERANCE:.1%}), "
                f"{self.worst_tile:.0%} in the worst {TILE}x{TILE} tile (at most "
                f"{TILE_TOLERANCE:.0%})")


def compare(actual: Image.Image, reference: Image.Image) -> Comparison:
    """How far ``actual`` is from ``reference``, after both are greyed and blurred."""
    diff = ImageChops.difference(_softened(actual), _softened(reference))
    mask = diff.point(lambda v: 255 if v > PIXEL_THRESHOLD else 0)
    share = mask.histogram()[255] / (actual.width * actual.height)
    tiles = mask.resize((max(1, actual.width // TILE), max(1, actual.height // TILE)),
                        Image.Resampling.BOX)  # each tile's mean: its share of 255s
    worst = max(tiles.getdata()) / 255  # type: ignore[type-var]
    return Comparison(share, worst, mask)


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
        result = compare(actual, reference)
        if not result.passes:
            red = Image.new("RGB", actual.size, (220, 0, 0))
            overlay = Image.composite(red, actual.convert("RGB"), result.mask)
            overlay.save(OUT / f"{name}-diff.png")
    assert result.passes, (
        f"{name}: {result} against {reference_path}; see {OUT / (name + '-diff.png')}, and "
        "refresh the reference with LOOPWISE_UPDATE_SCREENSHOTS=1 if the change is intended")
