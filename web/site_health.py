"""The answer of ``/healthz`` for the whole site, not just for the worker that got the request.

Under gunicorn the site is healthy when every worker that takes requests
serves the published generation (the one ``current`` points at) and it has
products. Workers still ``booting`` (creating their app: loading the model
and opening the index) take no requests yet, so they cannot answer a
shopper with anything wrong; they are reported but do not count against
health, and a reload keeps answering 200 from the workers already serving.
Workers that are ``exiting`` take no more requests and are not counted.

A published generation that fails verification is not served: each worker
keeps the one it had (``IndexService``) and says which one it refused. Then
the site is healthy when every worker serves the same earlier generation,
and the answer (200) says that the newest one was refused; it is not held at
503 until a build replaces the broken generation.

Outside gunicorn there is one process, and it answers for itself: 200 when
it serves an index with products.
"""

from __future__ import annotations

from collections import Counter

from .service import READY
from .worker_states import BOOTING, EXITING, WorkerStates

NOT_SERVING = "workers_not_ready"
REFUSED = "published_index_refused"


def worker_state(service) -> dict:
    """What this worker shares with the others: its state, the generation it serves and its item count,
    and the published generation it refused (``refused``, None when none)."""
    searcher = service.searcher
    return {
        "state": service.state,
        "generation": searcher.generation if searcher is not None else None,
        "items": len(searcher) if searcher is not None else 0,
        "refused": service.refused_generation,
    }


def _target(published: str | None, workers: list[dict]) -> tuple[str | None, bool]:
    """The generation every live worker should serve, and whether the published one was refused.

    The published one, unless a worker refused it and every live worker
    serves one and the same other generation: then that one.
    """
    if published is None or not any(state.get("refused") == published for state in workers):
        return published, False
    served = {state.get("generation") for state in workers}
    if len(served) == 1 and None not in served:
        return served.pop(), True
    return published, False


def site_health(service, states: WorkerStates | None) -> tuple[int, dict]:
    """The status code and JSON body of ``/healthz``.

    The body keeps the fields it always had (``state``, ``items``, and on a
    503 ``reason`` and ``message``) and adds ``generation`` (the one every
    worker should serve: the published one, unless the workers refused it)
    and ``workers``: how many are ``live`` (taking requests), how many of
    them are ``ready`` (serving ``generation``), how many are still
    ``booting``, and which ``generations`` the live ones serve. When the
    published generation was refused, a 200 also has ``reason``
    (``published_index_refused``), ``message`` and ``refused`` (its name).
    """
    own = worker_state(service)
    published = service.published_generation()
    if states is None:
        workers, booting = [own], 0
    else:
        others = states.others()
        booting = sum(1 for state in others if state.get("state") == BOOTING)
        workers = [own] + [state for state in others if state.get("state") not in (BOOTING, EXITING)]
    target, refused = _target(published, workers)
    if states is None:
        serving = [own["state"] == READY]
    else:
        serving = [state.get("state") == READY and state.get("generation") == target for state in workers]
    ready = sum(serving)
    body = {
        "state": own["state"],
        "items": own["items"],
        "generation": target,
        "workers": {
            "live": len(workers),
            "ready": ready,
            "booting": booting,
            "generations": dict(Counter(state["generation"] for state in workers if state.get("generation"))),
        },
    }
    if own["state"] != READY:
        body.update(reason=own["state"], message=service.status().get("message") or "")
    elif not own["items"]:
        body.update(reason="empty_catalogue", message="The catalogue has no products to search.")
    elif ready < len(workers):
        lagging = next(state for state, serves in zip(workers, serving, strict=True) if not serves)
        body.update(
            state=lagging.get("state") or own["state"],
            reason=NOT_SERVING,
            message=f"{ready} of {len(workers)} workers serve the published index.",
        )
    else:
        if refused:
            body.update(
                reason=REFUSED,
                refused=published,
                message=f"The newest index ({published}) failed verification; every worker serves {target}.",
            )
        return 200, body
    return 503, body
