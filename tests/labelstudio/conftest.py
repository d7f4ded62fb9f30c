"""A real Label Studio server for the interop tests (``make labelstudio``).

Installed from PyPI into ``var/labelstudio-venv`` on first use (about 2 minutes,
then cached), started fresh for the session on ``LOOPWISE_TEST_PORT_BASE`` + 100,
stopped at the end. Where it cannot be installed or started the tests are skipped
with the reason, and fail under ``LOOPWISE_REQUIRE_INTEGRATION=1``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.labelstudio.server import LabelStudio, LabelStudioUnavailable, install, start


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudio]:
    began = time.monotonic()
    try:
        exe = install()
        installed = time.monotonic()
        server = start(exe)
    except LabelStudioUnavailable as exc:
        if os.environ.get("LOOPWISE_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"{exc} (LOOPWISE_REQUIRE_INTEGRATION=1: the Label Studio tests must run)")
        pytest.skip(str(exc))
    print(f"\nLabel Studio: venv ready in {installed - began:.0f} s, "
          f"server up in {time.monotonic() - installed:.0f} s at {server.url}")
    try:
        yield server
    finally:
        server.stop()
