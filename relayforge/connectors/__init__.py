"""The provider connectors, by lower-case source name."""

from relayforge.connectors.base import Connector, DomainEvent
from relayforge.connectors.generic import GenericConnector
from relayforge.connectors.github import GitHubConnector
from relayforge.connectors.stripe import StripeConnector

CONNECTORS: dict[str, Connector] = {
    c.name: c for c in (GenericConnector(), GitHubConnector(), StripeConnector())
}

__all__ = ["CONNECTORS", "Connector", "DomainEvent"]
