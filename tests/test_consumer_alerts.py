"""The consumer alerts fire on the series the bus exports (promtool test rules)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import promtool_test_rules

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
UP = 'loopwise_consumer_up{service="labels",stream="loopwise:labels",group="labels"}'
RECREATED = 'loopwise_consumer_group_recreated_total{stream="loopwise:labels",group="labels"}'

CASES = {
    "rule_files": [str(ALERTS)],
    "evaluation_interval": "1m",
    "tests": [{
        "interval": "1m",
        # Consuming for 5 minutes, then backing off (PostgreSQL down) for 10, then back.
        "input_series": [
            {"series": UP, "values": "1x4 0x9 1x10"},
            {"series": RECREATED, "values": "0x9 1x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "LoopwiseConsumerNotConsuming", "exp_alerts": []},
            {"eval_time": "6m", "alertname": "LoopwiseConsumerNotConsuming", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "LoopwiseConsumerNotConsuming",
             "exp_alerts": [{
                 "exp_labels": {"severity": "critical", "service": "labels",
                                "stream": "loopwise:labels", "group": "labels"},
                 "exp_annotations": {
                     "summary": "labels is not consuming loopwise:labels",
                     "description": (
                         "Its consumer in group labels has been backing off, stalled or "
                         "stopped for 2 minutes: a store it needs is unavailable (entries "
                         "wait, pending, and nothing is lost) or a call hangs. /readyz on "
                         "the service shows each consumer's state and last error."),
                 }}]},
            {"eval_time": "17m", "alertname": "LoopwiseConsumerNotConsuming", "exp_alerts": []},
            {"eval_time": "9m", "alertname": "LoopwiseConsumerGroupRecreated", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "LoopwiseConsumerGroupRecreated",
             "exp_alerts": [{
                 "exp_labels": {"severity": "warning", "stream": "loopwise:labels",
                                "group": "labels"},
                 "exp_annotations": {
                     "summary": ("Consumer group labels of loopwise:labels was gone and "
                                 "recreated"),
                     "description": (
                         "Redis lost the group (restarted without its data, failed over to "
                         "an empty replica, or was flushed). Consumption goes on from the "
                         "stream's first entry, but entries written before the loss and not "
                         "yet consumed are gone with it: check Redis persistence."),
                 }}]},
            {"eval_time": "28m", "alertname": "LoopwiseConsumerGroupRecreated", "exp_alerts": []},
        ],
    }],
}


def test_a_consumer_not_consuming_and_a_recreated_group_alert(tmp_path):
    promtool_test_rules(CASES, tmp_path)
