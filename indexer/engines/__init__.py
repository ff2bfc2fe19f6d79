"""Engines embed a ``BuildPlan`` and write shards into ``work/``; they are peers.

Each engine module exposes the same function::

    embed(plan, settings, model, reporter, **options) -> list[Skipped]

``local`` runs on this machine; ``ray`` runs on a Ray cluster (optional
dependency, imported only when chosen). ``build.build_index`` plans,
dispatches here by name and publishes.
"""

from __future__ import annotations

import importlib

ENGINES = {"local": "local", "ray": "ray_data"}


def get_engine(name: str):
    """The ``embed`` function of the engine called ``name``."""
    try:
        module = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None
    return importlib.import_module(f"{__name__}.{module}").embed
