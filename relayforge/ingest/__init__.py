"""Ingest: a verified request becomes an Arrival (arrival.py), which the writer records with
the help of the group-commit batcher, the replay guard and the quota ledger."""

from relayforge.ingest.arrival import Arrival, arrive
from relayforge.ingest.writer import IngestWriter

__all__ = ["Arrival", "IngestWriter", "arrive"]
