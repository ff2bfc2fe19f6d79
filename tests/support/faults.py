"""Fault injection for engine tests: an embedding actor that dies once, as an OOM kill would."""

from __future__ import annotations

import logging
import os

from indexer.engines.ray_data import EmbedActor

log = logging.getLogger(__name__)


def crash_once_actor(marker: str) -> type[EmbedActor]:
    """An ``EmbedActor`` subclass whose first batch in the whole run kills its process.

    The first actor to reach a batch creates ``marker`` and exits without
    cleanup; Ray restarts it and retries the batch, and actors that find the
    marker embed normally. The class is made here, not at module level, so
    Ray ships it to the workers by value together with the marker path.
    """

    class CrashOnceActor(EmbedActor):
        def __call__(self, batch):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return super().__call__(batch)
            os.close(fd)
            log.warning("fault injection: actor pid %d exits mid-batch", os.getpid())
            os._exit(17)

    return CrashOnceActor
