"""The provider connectors, by lower-case source name."""

from relayforge.connectors.base import Connector
from relayforge.connectors.generic import GenericConnector
from relayforge.connectors.github import GitHubConnector
from relayforge.connectors.stripe import StripeConnector

CONNECTORS: dict[str, Connector] = {
    c.name: c for c in (GenericConnector(), GitHubConnector(), StripeConnector())
}

SOURCES = tuple(CONNECTORS)  # every provider name, declared once

__all__ = ["CONNECTORS", "SOURCES", "Connector"]
