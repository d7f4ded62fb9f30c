"""The screenshot comparison forgives anti-aliasing and catches a layout change.

Checked on a committed reference screenshot of the reviewer page: the same page with its
edges drawn softer (what another font rasteriser does) passes; the same page with a block
moved by a few pixels, or a line of text gone, fails.
"""

from __future__ import annotations

from PIL import Image, ImageChops, ImageFilter

from tests.router.visual import REFERENCES, compare

PAGE = REFERENCES / "review-by-text.png"


def _reference() -> Image.Image:
    with Image.open(PAGE) as image:
        return image.convert("RGB")


def test_softer_glyph_edges_pass():
    page = _reference()
    for radius in (0.5, 0.8):
        result = compare(page.filter(ImageFilter.GaussianBlur(radius)), page)
        assert result.passes, (radius, str(result))
    assert compare(page, page).share == 0.0


def test_a_block_moved_by_a_few_pixels_fails():
    page = _reference()
    moved = page.copy()
    # the lower half of the page (options, buttons) lower by 6 pixels
    box = (0, page.height // 2, page.width, page.height - 6)
    moved.paste(page.crop(box), (0, page.height // 2 + 6))
    result = compare(moved, page)
    assert not result.passes, str(result)


def test_a_line_of_text_gone_fails():
    page = _reference()
    blank = page.copy()
    # the header bar's title: paint it over with the bar's own background colour
    background = page.getpixel((page.width - 5, 5))
    blank.paste(background, (0, 0, page.width // 3, 48))
    assert ImageChops.difference(blank, page).getbbox() is not None
    result = compare(blank, page)
    assert not result.passes, str(result)
