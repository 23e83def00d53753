"""Ingest: a verified request becomes a Delivery (delivery.py), which the writer records with
the help of the group-commit batcher, the replay guard and the quota ledger."""

from relayforge.ingest.delivery import Delivery, deliver
from relayforge.ingest.writer import IngestWriter

__all__ = ["Delivery", "IngestWriter", "deliver"]
