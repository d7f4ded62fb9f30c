"""Prometheus metrics, ``loopwise_*``: one registry of names all services share.

Each process exports only the series it touches; defining every metric here
keeps the names in one place for ``deploy/`` (alerts, dashboard) and its test.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
STREAM_LENGTH = Gauge("loopwise_stream_length", "Entries held by a stream", ["stream"])
STREAM_LAG = Gauge(
    "loopwise_stream_lag",
    "Entries of a stream that a consumer group has not read yet",
    ["stream", "group"],
)
STREAM_PENDING = Gauge(
    "loopwise_stream_pending",
    "Entries a consumer group has read but not acknowledged",
    ["stream", "group"],
)
QUEUE_DEPTH = Gauge("loopwise_queue_depth", "Review tasks waiting", ["project"])
ROUTED = Counter("loopwise_routed", "Predictions routed", ["project", "decision"])
LABELS_STORED = Counter("loopwise_labels_stored", "Label events stored", ["project", "source"])
PREDICTIONS = Counter("loopwise_predictions", "Predictions published", ["project"])
MODEL_TRAINED = Counter("loopwise_model_trained", "Models trained", ["project"])
AGREEMENT = Gauge("loopwise_agreement", "Pairwise agreement among human labels", ["project"])
GOLD_CATCH_RATE = Gauge(
    "loopwise_gold_catch_rate",
    "Share of planted wrong pre-labels corrected",
    ["project", "labeler"],
)
CORRECTION_RATE = Gauge(
    "loopwise_correction_rate", "Share of pre-labels the labeler changed", ["project", "labeler"]
)
FLAGGED_LABELERS = Gauge("loopwise_flagged_labelers", "Labelers flagged as deferring", ["project"])
AUTO_ACCEPT_PRECISION = Gauge(
    "loopwise_auto_accept_precision", "Estimated precision of auto-accepted labels", ["project"]
)
AUTO_ACCEPT_PRECISION_LOWER = Gauge(
    "loopwise_auto_accept_precision_lower_bound",
    "One-sided 95% lower confidence bound of the auto-accept precision",
    ["project"],
)
QUEUE_DROPPED = Counter(
    "loopwise_queue_dropped", "Review tasks dropped because the queue was full", ["project"]
)
AUTO_ACCEPT_THRESHOLD = Gauge(
    "loopwise_auto_accept_threshold",
    "Confidence at or above which predictions are auto-accepted",
    ["project"],
)
BACKGROUND_FAILURES = Counter(
    "loopwise_background_failures",
    "Failed runs of a background loop or job (the loop goes on)",
    ["service", "loop"],
)
