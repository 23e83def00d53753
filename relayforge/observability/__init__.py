"""Metrics, logs and traces: every metric is declared in metrics.py."""
