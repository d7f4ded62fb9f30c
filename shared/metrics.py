"""Prometheus metrics, ``loopwise_*``: one registry of names all services share.

Each process exports only the series it touches; defining every metric here
keeps the names in one place for ``deploy/`` (alerts, dashboard) and its test.

A service with stream workers (``LOOPWISE_STREAM_WORKERS`` > 1) runs in several
processes; ``loopwise serve`` then puts prometheus-client in its multiprocess mode
(:mod:`shared.metricsdir`): every process writes its values to files in one directory,
and ``/metrics`` (:func:`exposition`) merges them: counters and histograms are summed
over the processes, dead ones included, and each gauge is merged as its
``multiprocess_mode`` says (``livemostrecent``: a fact about Redis or a project that
whichever process looked last reported; ``livemin`` for ``loopwise_consumer_up``: 0 if
any live process's consumer is not consuming). The mode restricts what metrics may do:
no custom collectors, no Info or Enum, no ``set_function``, and a series cannot be
removed (:func:`forget` marks it NaN instead).
"""

from __future__ import annotations

import math
import os
from contextlib import suppress
from typing import Any, Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from shared.metricsdir import MULTIPROC_ENV


def multiprocess() -> bool:
    """Whether this process writes its metrics for a multiprocess ``/metrics`` (the choice
    prometheus-client made when it was imported)."""
    return MULTIPROC_ENV in os.environ


def exposition() -> bytes:
    """The text ``/metrics`` answers: this process's registry, or in multiprocess mode
    the merge of every process's files."""
    if not multiprocess():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)


def forget(gauge: Any, *labels: str) -> None:
    """Drop a gauge's series (a group that is gone, a value nobody can tell any more).
    Multiprocess mode cannot remove a series from the processes' files: it says NaN."""
    if multiprocess():
        gauge.labels(*labels).set(math.nan)
        return
    with suppress(KeyError):
        gauge.remove(*labels)


EVENTS_CONSUMED = Counter(
    "loopwise_events_consumed", "Stream entries consumed", ["service", "stream"]
)
EVENTS_DEADLETTERED = Counter(
    "loopwise_events_deadlettered",
    "Stream entries sent to the dead-letter stream",
    ["service", "stream", "reason"],
)
HANDLER_SECONDS = Histogram(
    "loopwise_handler_seconds",
    "Time to handle one batch of stream entries",
    ["service", "stream"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_RECLAIMED = Counter(
    "loopwise_events_reclaimed",
    "Pending stream entries claimed again (a dead consumer's, or a batch that failed)",
    ["service", "stream"],
)
CONSUMER_UP = Gauge(
    "loopwise_consumer_up",
    "1 while a stream consumer is consuming; 0 while it backs off, is stalled or stopped",
    ["service", "stream", "group"],
    multiprocess_mode="livemin",
)
CONSUMER_BACKOFFS = Counter(
    "loopwise_consumer_backoffs",
    "Pauses of a stream consumer after a failure that was not its entries' "
    "(reason: infrastructure, a store unavailable; error, anything else)",
    ["service", "stream", "reason"],
)
CONSUMER_GROUP_RECREATED = Counter(
    "loopwise_consumer_group_recreated",
    "Consumer groups found gone (Redis restarted empty, failed over, flushed) and recreated",
    ["stream", "group"],
)
STREAM_TRIMMED = Counter(
    "loopwise_stream_trimmed",
    "Stream entries trimmed after every consumer group acknowledged them",
    ["stream"],
)
CONSUMERS_DELETED = Counter(
    "loopwise_stream_consumers_deleted",
    "Consumer names deleted from a group after consumer_retention_seconds without reading "
    "and with nothing pending (their process is gone)",
    ["stream", "group"],
)
# Gauges of a fact about Redis or a project: the value the process that looked last set.
FACT: Final = "livemostrecent"
STREAM_LENGTH = Gauge("loopwise_stream_length", "Entries held by a stream", ["stream"],
                      multiprocess_mode=FACT)
STREAM_LAG = Gauge(
    "loopwise_stream_lag",
    "Entries of a stream that a consumer group has not read yet",
    ["stream", "group"],
    multiprocess_mode=FACT,
)
STREAM_PENDING = Gauge(
    "loopwise_stream_pending",
    "Entries a consumer group has read but not acknowledged",
    ["stream", "group"],
    multiprocess_mode=FACT,
)
QUEUE_DEPTH = Gauge("loopwise_queue_depth", "Review tasks waiting", ["project"],
                    multiprocess_mode=FACT)
ROUTED = Counter("loopwise_routed", "Predictions routed", ["project", "decision"])
LABELS_STORED = Counter("loopwise_labels_stored", "Label events stored", ["project", "source"])
PREDICTIONS = Counter("loopwise_predictions", "Predictions published", ["project"])
MODEL_TRAINED = Counter("loopwise_model_trained", "Models trained", ["project"])
AGREEMENT = Gauge("loopwise_agreement", "Pairwise agreement among human labels", ["project"],
                  multiprocess_mode=FACT)
GOLD_CATCH_RATE = Gauge(
    "loopwise_gold_catch_rate",
    "Share of planted wrong pre-labels corrected",
    ["project", "labeler"],
    multiprocess_mode=FACT,
)
CORRECTION_RATE = Gauge(
    "loopwise_correction_rate", "Share of pre-labels the labeler changed", ["project", "labeler"],
    multiprocess_mode=FACT,
)
FLAGGED_LABELERS = Gauge("loopwise_flagged_labelers", "Labelers flagged as deferring", ["project"],
                         multiprocess_mode=FACT)
AUTO_ACCEPT_PRECISION = Gauge(
    "loopwise_auto_accept_precision", "Estimated precision of auto-accepted labels", ["project"],
    multiprocess_mode=FACT,
)
AUTO_ACCEPT_PRECISION_LOWER = Gauge(
    "loopwise_auto_accept_precision_lower_bound",
    "One-sided 95% lower confidence bound of the auto-accept precision",
    ["project"],
    multiprocess_mode=FACT,
)
QUEUE_DROPPED = Counter(
    "loopwise_queue_dropped", "Review tasks dropped because the queue was full", ["project"]
)
AUTO_ACCEPT_THRESHOLD = Gauge(
    "loopwise_auto_accept_threshold",
    "Confidence at or above which predictions are auto-accepted",
    ["project"],
    multiprocess_mode=FACT,
)
BACKGROUND_FAILURES = Counter(
    "loopwise_background_failures",
    "Failed runs of a background loop or job (the loop goes on)",
    ["service", "loop"],
)
HTTP_REQUESTS = Counter(
    "loopwise_http_requests",
    "HTTP requests answered, by route template (unmatched paths: route=\"unmatched\"), "
    "method and status code",
    ["service", "route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "loopwise_http_request_seconds",
    "Time from a request's arrival to the end of its response, by route template, method "
    "and status code",
    ["service", "route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
