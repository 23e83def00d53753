"""Delivery to a tenant's own HTTP services: filters, signing, the SSRF guard, the HTTP call,
and the consumer's side of a delivery (circuit, limits, outcome)."""
