"""Where the processes of one service write their metrics (prometheus-client's
multiprocess mode), prepared before prometheus-client is imported.

prometheus-client decides at import whether values live in the process (the default)
or in files under ``PROMETHEUS_MULTIPROC_DIR``, so ``loopwise serve`` calls
:func:`prepare` first: with ``LOOPWISE_STREAM_WORKERS`` > 1 the service gets a
directory of its own (``<LOOPWISE_METRICS_DIR>/<service>-<port>``), emptied at start so
that no earlier run's counts are added to this one's, and the forked workers inherit
it. One process per service keeps the in-process registry: nothing to merge.
This module must not import prometheus_client.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from shared.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client


def prepare(service: str, settings: Settings) -> Path | None:
    """Empty and use this service's metrics directory when it runs several processes;
    the directory, or None for the in-process registry."""
    if settings.stream_workers <= 1:
        return None
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics directory "
                           "was set: its values would stay in each process")
    path = Path(settings.metrics_dir) / f"{service}-{settings.port_of(service)}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def process_exited(pid: int) -> None:
    """A worker process has ended: its live gauges stop counting (its counters stay, in
    the sums). Nothing to do for a service without a metrics directory."""
    if MULTIPROC_ENV not in os.environ:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
