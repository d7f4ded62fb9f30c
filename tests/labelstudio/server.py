"""A real Label Studio for the interop tests: installed from PyPI, started on loopback, stopped.

Label Studio is a Django application with hundreds of dependencies that must not
mix with loopwise's, so it gets a virtual environment of its own, cached under
``var/labelstudio-venv`` (a stamp file records the version: a later run only
checks it). Each start uses a fresh, empty data directory, and the owner account
and its API token are made non-interactively by ``label-studio start
--username/--password/--user-token`` (with ``--enable-legacy-api-token`` so that
``Authorization: Token <token>`` works, as in Label Studio's own SDK).

Use it from the tests (``tests/labelstudio/conftest.py``) or by hand::

    python -m tests.labelstudio.server install   # create or check the cached venv
    python -m tests.labelstudio.server serve     # start, print URL and token, wait for Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
VERSION = os.environ.get("LOOPWISE_LABELSTUDIO_VERSION", "1.23.2")
VENV = Path(os.environ.get("LOOPWISE_LABELSTUDIO_VENV", ROOT / "var" / "labelstudio-venv"))
PORT_BASE = int(os.environ.get("LOOPWISE_TEST_PORT_BASE", "18000"))
# Inside this engineer's/CI run's port range, away from the services (+1..+4) and chaos (+40..).
PORT = int(os.environ.get("LOOPWISE_LABELSTUDIO_PORT", str(PORT_BASE + 100)))
USERNAME = "owner@loopwise.local"
PASSWORD = "loopwise-ls-Pass-1"
TOKEN = "loopwise0labelstudio0test0token0"  # a throwaway server on loopback
START_TIMEOUT = float(os.environ.get("LOOPWISE_LABELSTUDIO_START_TIMEOUT", "600"))


class LabelStudioUnavailable(RuntimeError):
    """Label Studio could not be installed or started; the message says which step and why."""


def _python() -> str:
    """Python 3.11 when present (Label Studio 1.23 supports 3.10-3.13), else this one."""
    return shutil.which("python3.11") or sys.executable


def install(venv: Path = VENV, version: str = VERSION) -> Path:
    """The ``label-studio`` executable of the cached venv, installing it from PyPI first
    when the venv is missing or holds another version."""
    exe = venv / "bin" / "label-studio"
    stamp = venv / ".label-studio-version"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == version:
        return exe
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [_python(), "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"label-studio=={version}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            shutil.rmtree(venv, ignore_errors=True)
            raise LabelStudioUnavailable(
                f"installing label-studio=={version} failed at `{' '.join(step)}`:\n{tail}")
    stamp.write_text(version + "\n")
    return exe


@dataclass
class LabelStudio:
    """A running server: its URL, the owner's token, and how to stop it."""

    url: str
    token: str
    username: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """SIGTERM to the server's process group (it forks workers), SIGKILL after 30 s,
        then remove its data directory."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start(exe: Path, port: int = PORT, timeout: float = START_TIMEOUT) -> LabelStudio:
    """Start Label Studio on 127.0.0.1:``port`` with a fresh SQLite data directory and an
    owner account with a known token; return once ``/health`` answers and the token works."""
    data_dir = Path(tempfile.mkdtemp(prefix="loopwise-labelstudio-"))
    log = data_dir / "server.log"
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LATEST_VERSION_CHECK": "false",  # no call home from the test server
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_HOST": f"http://127.0.0.1:{port}",
        "DJANGO_DB": "sqlite",
    }
    command = [
        str(exe), "start", "--data-dir", str(data_dir), "--internal-host", "127.0.0.1",
        "--port", str(port), "--no-browser", "--username", USERNAME, "--password", PASSWORD,
        "--user-token", TOKEN, "--enable-legacy-api-token",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, cwd=data_dir)
    server = LabelStudio(f"http://127.0.0.1:{port}", TOKEN, USERNAME, data_dir, log, process)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=10) as http:
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                server.stop()
                raise LabelStudioUnavailable(
                    f"label-studio exited with {process.returncode} while starting:\n{tail}")
            try:
                health = http.get("/health")
                if health.status_code == 200:
                    me = http.get("/api/current-user/whoami",
                                  headers={"Authorization": f"Token {TOKEN}"})
                    if me.status_code == 200:
                        return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                server.stop()
                raise LabelStudioUnavailable(
                    f"label-studio not ready on {server.url} after {timeout:.0f} s:\n{tail}")
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["install", "serve"])
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args(argv)
    began = time.monotonic()
    exe = install()
    print(f"label-studio {VERSION} in {VENV} ({time.monotonic() - began:.0f} s)", flush=True)
    if args.command == "install":
        return 0
    began = time.monotonic()
    server = start(exe, args.port)
    print(f"Label Studio at {server.url} ({time.monotonic() - began:.0f} s to start); "
          f"user {server.username}, token {server.token}; Ctrl-C stops it", flush=True)
    # A background job ignores SIGINT: SIGTERM must stop the server too, not orphan it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
