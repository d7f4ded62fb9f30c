"""Recording benchmark results: one section per benchmark in BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    """Cores, CPU model, Python and kernel: what a reader needs to compare figures."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({model}), {platform.python_implementation()} "
        f"{platform.python_version()}, Linux {platform.release()}"
    )


def header(command: str, note: str = "") -> list[str]:
    """The lines every section opens with: how to reproduce it, where and when it ran."""
    from datetime import UTC, datetime

    return [
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC" + (f"; {note}" if note else ""),
    ]


def write_section(heading: str, text: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section starting with ``heading``, leaving the others alone.

    Re-reads the file right before writing, so benchmarks run one after another
    never overwrite each other's sections.
    """
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = current.find(heading)
    if start < 0:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        following = current.find("\n## ", start + len(heading))
        updated = current[:start] + text.rstrip("\n") + "\n" + (
            "\n" + current[following + 1 :] if following >= 0 else "")
    path.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")
