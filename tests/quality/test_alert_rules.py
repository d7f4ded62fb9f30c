"""The quality alert rules fire on the series the quality service exports (promtool test rules)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import promtool_test_rules

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"

CASES = {
    "rule_files": [str(ALERTS)],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'loopwise_gold_catch_rate{project="p",labeler="stamper"}',
                 "values": "0.1x90"},
                {"series": 'loopwise_gold_catch_rate{project="p",labeler="honest"}',
                 "values": "0.95x90"},
                {"series": 'loopwise_correction_rate{project="p",labeler="stamper"}',
                 "values": "0.01x90"},
                {"series": 'loopwise_correction_rate{project="p",labeler="a"}',
                 "values": "0.2x90"},
                {"series": 'loopwise_correction_rate{project="p",labeler="b"}',
                 "values": "0.18x90"},
                {"series": 'loopwise_flagged_labelers{project="p"}', "values": "1x90"},
                # Two projects whose precision gauge is below the threshold: "auto" accepts
                # predictions, "none" accepts none (nothing the gauge could be about).
                {"series": 'loopwise_auto_accept_precision{project="auto",job="router"}',
                 "values": "0.8x90"},
                {"series": 'loopwise_auto_accept_threshold{project="auto",job="router"}',
                 "values": "0.9x90"},
                {"series": 'loopwise_routed_total{project="auto",decision="auto",'
                           'job="router"}', "values": "0+10x90"},
                {"series": 'loopwise_auto_accept_precision{project="none",job="router"}',
                 "values": "0.8x90"},
                {"series": 'loopwise_auto_accept_threshold{project="none",job="router"}',
                 "values": "0.9x90"},
                {"series": 'loopwise_routed_total{project="none",decision="review",'
                           'job="router"}', "values": "0+10x90"},
                {"series": 'loopwise_routed_total{project="none",decision="auto",'
                           'job="router"}', "values": "0x90"},
            ],
            "alert_rule_test": [
                {"eval_time": "40m", "alertname": "LoopwiseGoldCatchRateLow",
                 "exp_alerts": [{
                     "exp_labels": {"severity": "warning", "project": "p",
                                    "labeler": "stamper"},
                     "exp_annotations": {
                         "summary": "stamper keeps planted wrong pre-labels in p",
                         "description": (
                             "Gold catch rate is 10% (< 50%): the labeler accepts pre-labels "
                             "known to be wrong. The quality service's sequential test decides "
                             "the flag; see GET /v1/projects/p/quality."),
                     }}]},
                {"eval_time": "70m", "alertname": "LoopwiseLabelerCorrectionRateCollapsed",
                 "exp_alerts": [{
                     "exp_labels": {"severity": "warning", "project": "p",
                                    "labeler": "stamper"},
                     "exp_annotations": {
                         "summary": "stamper corrects far fewer pre-labels than peers in p",
                         "description": (
                             "Correction rate 1% is under a quarter of the project's median: "
                             "possible rubber-stamping of model pre-labels."),
                     }}]},
                {"eval_time": "20m", "alertname": "LoopwiseGoldCatchRateLow", "exp_alerts": []},
                {"eval_time": "60m", "alertname": "LoopwiseAutoAcceptPrecisionBelowThreshold",
                 "exp_alerts": [{
                     "exp_labels": {"severity": "critical", "project": "auto"},
                     "exp_annotations": {
                         "summary": ("Auto-accepted labels in auto are less precise than "
                                     "the threshold promises"),
                         "description": (
                             "Estimated auto-accept precision is 80%, below the confidence "
                             "threshold: the model is over-confident; raise the threshold "
                             "or retrain."),
                     }}]},
            ],
        }
    ],
}


def test_quality_alerts_fire_for_the_rubber_stamper_and_the_auto_accepting_project_only(
        tmp_path):
    promtool_test_rules(CASES, tmp_path)
