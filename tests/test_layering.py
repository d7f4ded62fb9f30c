"""Who owns what, checked in the source: no service names another service's Redis keys
(the import-linter contracts in pyproject.toml keep services out of each other's modules
and tables; keys are strings, which they cannot see), and every service folder holds the
module of its tables if it has any."""

from __future__ import annotations

import re
from pathlib import Path

SERVICES = ("scorer", "router", "labels", "quality")
ROOT = Path(__file__).resolve().parents[1]
KEY = re.compile(r"loopwise:(scorer|router|labels|quality):")


def test_no_service_names_another_services_keys() -> None:
    trespass = []
    for service in SERVICES:
        for path in (ROOT / "services" / service).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                for owner in KEY.findall(line):
                    if owner != service:
                        trespass.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not trespass, "a service reads another's keys:\n" + "\n".join(trespass)


def test_shared_names_no_services_keys_or_tables() -> None:
    trespass = []
    for path in (ROOT / "shared").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        text = path.read_text()
        trespass += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in KEY.finditer(text)]
        for table in ("label_events", "label_versions", "items", "models", "projects",
                      "quality_label_votes", "quality_findings"):
            if re.search(rf"""table\(\s*["']{table}["']|Table\(\s*["']{table}["']""", text):
                trespass.append(f"{path.relative_to(ROOT)}: table {table}")
    assert not trespass, "\n".join(trespass)
