"""Relayforge: multi-tenant webhook ingestion and job orchestration."""

__version__ = "0.1.0"
