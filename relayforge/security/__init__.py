"""Tenant protection and access: rate limits, provider secrets, admin keys and roles."""
