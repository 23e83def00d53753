"""The provider connectors, by lower-case source name."""

from relayforge.connectors.base import Connector
from relayforge.connectors.generic import GenericConnector
from relayforge.connectors.github import GitHubConnector
from relayforge.connectors.gitlab import GitLabConnector
from relayforge.connectors.linear import LinearConnector
from relayforge.connectors.paddle import PaddleConnector
from relayforge.connectors.shopify import ShopifyConnector
from relayforge.connectors.slack import SlackConnector
from relayforge.connectors.standard import StandardWebhooksConnector
from relayforge.connectors.stripe import StripeConnector

CONNECTORS: dict[str, Connector] = {
    c.name: c for c in (
        GenericConnector(), GitHubConnector(), StripeConnector(), StandardWebhooksConnector(),
        ShopifyConnector(), SlackConnector(), GitLabConnector(), PaddleConnector(),
        LinearConnector())
}

SOURCES = tuple(CONNECTORS)  # every provider name, declared once

__all__ = ["CONNECTORS", "SOURCES", "Connector"]
