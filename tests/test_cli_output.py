"""The ``loopwise`` command as an operator meets it: every operational error is one line
on stderr and exit 1 (``--debug`` shows the traceback), and every command that lists or
shows prints, with ``--json``, one parseable document with the facts of its text output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PORT_BASE, service_env

pytestmark = pytest.mark.integration


def loopwise(settings, *args: str, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loopwise", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **service_env(settings),
                               "LOOPWISE_LOG_LEVEL": "WARNING", **(env or {})})


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    """The failure's one line, after checking it is the only output and exit is 1."""
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loopwise: error: "), run.stderr
    return lines[0]


NO_DATABASE = {"LOOPWISE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
NO_REDIS = {"LOOPWISE_REDIS_URL": "redis://127.0.0.1:1/0"}


@pytest.mark.parametrize(("args", "env", "says"), [
    (["labels", "versions", "--project", "x"], NO_DATABASE,
     "cannot use the database (127.0.0.1:1/none)"),
    (["token", "create", "--user", "u", "--role", "labeler", "--project", "x"], NO_DATABASE,
     "cannot use the database"),
    (["up"], NO_REDIS, "cannot use Redis (redis://127.0.0.1:1/0)"),
    (["labels", "import", "--project", "x", "/no/such/export.json"], {},
     "No such file or directory: /no/such/export.json"),
    (["token", "revoke", "999999999"], {}, "no token 999999999"),
    (["labels", "versions", "--project", "no-such-project"], {},
     "unknown project 'no-such-project'"),
    (["labels", "export", "--project", "no-such-project"], {},
     "unknown project 'no-such-project'"),
    (["labels", "revert", "--project", "no-such-project", "--batch", "b"], {},
     "unknown project 'no-such-project'"),
    (["evaluate", "--project", "no-such-project"], {}, "unknown project 'no-such-project'"),
])
def test_an_operational_error_is_one_line_and_exit_1(settings, args, env, says):
    assert says in one_line_error(loopwise(settings, *args, env=env))


def test_a_file_that_is_not_a_label_studio_export_says_what_is_wrong(settings, tmp_path):
    bad = tmp_path / "export.json"
    bad.write_text('{"not": "a list"}')
    line = one_line_error(loopwise(settings, "labels", "import", "--project", "x", str(bad)))
    assert f"{bad} is not a Label Studio JSON export" in line


def test_redis_down_when_an_import_is_to_be_published_says_so(settings, project, tmp_path):
    """Stored in the database, not yet on the stream: the line names Redis and says to send
    the file again (the import is idempotent)."""
    source = tmp_path / "ls.json"
    source.write_bytes(_export(["i1"]))
    line = one_line_error(loopwise(settings, "labels", "import", "--project", project,
                                   str(source), "--item-key", "item_id", env=NO_REDIS))
    assert "cannot use Redis (redis://127.0.0.1:1/0)" in line and "again" in line


def test_debug_shows_the_traceback_anywhere_on_the_line(settings):
    for args in (["--debug", "labels", "versions", "--project", "x"],
                 ["labels", "versions", "--project", "x", "--debug"]):
        run = loopwise(settings, *args, env=NO_DATABASE)
        assert run.returncode != 0
        assert "Traceback" in run.stderr and "Connect" in run.stderr


def test_a_usage_error_still_exits_2(settings):
    run = loopwise(settings, "labels", "export", "--project", "x", "--format", "xml")
    assert run.returncode == 2 and "format must be one of" in run.stderr


def _export(items: list[str]) -> bytes:
    return json.dumps([{"id": n, "data": {"item_id": item, "text": f"text {n}"},
                        "annotations": [{"id": 100 + n, "completed_by": 1,
                                         "created_at": "2026-01-02T03:04:05Z",
                                         "result": [{"from_name": "label", "to_name": "text",
                                                     "type": "choices",
                                                     "value": {"choices": ["ab"[n % 2]]}}]}]}
                       for n, item in enumerate(items)]).encode()


def test_json_output_is_parseable_and_says_what_the_text_says(settings, project, tmp_path):
    """import, versions, revert, export, token list/revoke, users list: --json and text."""
    source = tmp_path / "ls.json"
    source.write_bytes(_export(["i1", "i2", "i3"]))
    base = ["--project", project]

    dry = loopwise(settings, "labels", "import", *base, str(source), "--item-key", "item_id",
                   "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["annotations"] == 3
    done = loopwise(settings, "labels", "import", *base, str(source), "--item-key", "item_id",
                    "--batch-id", "ls-1")
    assert done.returncode == 0, done.stderr
    assert "imported 3 annotation(s) of 3 task(s)" in done.stdout and "batch ls-1" in done.stdout

    out = tmp_path / "head.jsonl"
    exported = loopwise(settings, "labels", "export", *base, "--out",
                        str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)  # stdout is the document alone: progress on stderr
    assert summary["rows"] == len(out.read_text().splitlines()) == 3
    again = loopwise(settings, "labels", "export", *base, "--out", str(out))
    assert f"{summary['rows']} rows written to {out}" in again.stdout

    preview = loopwise(settings, "labels", "revert", *base, "--batch", "ls-1", "--json")
    assert preview.returncode == 0, preview.stderr
    assert json.loads(preview.stdout)["version"] is None
    applied = loopwise(settings, "labels", "revert", *base, "--batch", "ls-1", "--apply",
                       "--message", "bad batch", "--json")
    assert applied.returncode == 0, applied.stderr
    made = json.loads(applied.stdout)
    assert made["events"] == 3 and made["version"]["number"] >= 1

    listed = loopwise(settings, "labels", "versions", *base, "--json")
    text = loopwise(settings, "labels", "versions", *base)
    assert listed.returncode == text.returncode == 0, listed.stderr + text.stderr
    versions = json.loads(listed.stdout)
    assert made["version"]["number"] in [v["number"] for v in versions]
    lines = text.stdout.strip().splitlines()
    assert len(lines) == len(versions)
    for line, v in zip(lines, versions, strict=True):
        assert line.split()[0] == str(v["number"]) and v["kind"] in line
        assert v["message"] in line

    created = loopwise(settings, "token", "create", "--user", f"op-{project}", "--role",
                       "labeler", "--project", project)
    assert created.returncode == 0, created.stderr
    tokens = loopwise(settings, "token", "list", "--project", project, "--json")
    tokens_text = loopwise(settings, "token", "list", "--project", project)
    rows = json.loads(tokens.stdout)
    assert [r["user_id"] for r in rows] == [f"op-{project}"]
    assert "token_hash" not in rows[0] and created.stdout.strip() not in tokens.stdout
    assert rows[0]["created_at"].endswith("+00:00") and "T" in rows[0]["created_at"]  # ISO
    [line] = tokens_text.stdout.strip().splitlines()
    assert line.split()[:4] == [str(rows[0]["id"]), f"op-{project}", "labeler", project]
    revoked = loopwise(settings, "token", "revoke", str(rows[0]["id"]), "--json")
    assert json.loads(revoked.stdout) == {"id": rows[0]["id"], "revoked": True,
                                          "was_live": True}
    assert "revoked" in loopwise(settings, "token", "list", "--project", project).stdout

    user = f"person-{project}"
    assert loopwise(settings, "users", "create", user).returncode == 0
    users = json.loads(loopwise(settings, "users", "list", "--json").stdout)
    users_text = loopwise(settings, "users", "list").stdout
    mine = [u for u in users if u["user_id"] == user]
    assert len(mine) == 1 and f"{user} " in users_text
    assert len(users_text.strip().splitlines()) == len(users)


def test_a_benchmark_warns_before_it_flushes_redis(settings):
    """The warning comes first, even when the benchmark then fails (here: its database is
    unreachable, so nothing is flushed)."""
    run = loopwise(settings, "bench", "router", "--redis-url", "redis://127.0.0.1:1/9",
                   "--router-port", str(PORT_BASE + 901), "--bare-port", str(PORT_BASE + 902),
                   "--predictions", "1000", "--no-write")
    assert run.returncode == 1
    first = run.stderr.strip().splitlines()[0]
    assert first.startswith("loopwise: warning: bench router FLUSHES Redis database 9 at "
                            "redis://127.0.0.1:1/9")


def test_the_next_steps_the_demo_prints_run_as_written(settings, project, monkeypatch):
    """The commands at the end of `make demo` carry the demo's database URL, so that the
    token they make is in the database the services will read."""
    import shlex

    from loopwise.cli import _next_steps
    from shared.settings import get_settings

    for name, value in service_env(settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        steps = _next_steps(project)
    finally:
        get_settings.cache_clear()
    assert "make up" in steps and f"{settings.url_of('router')}/" in steps
    [line] = [s.strip() for s in steps.splitlines() if " token create " in s]
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words if "=" in w and w.startswith("LOOPWISE_"))
    assert env == {"LOOPWISE_DATABASE_URL": settings.database_url}
    argv = [w for w in words if not w.startswith("LOOPWISE_")]
    assert argv[0].endswith("loopwise") and Path(argv[0]).exists()
    made = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **service_env(settings), **env})
    assert made.returncode == 0, made.stderr
    assert len(made.stdout.strip()) > 20  # the token
