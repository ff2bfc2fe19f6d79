"""The web tier: routes, request parsing and the index service."""
