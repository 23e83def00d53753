"""The HTTP layer: routes, and the only place where errors become responses."""
