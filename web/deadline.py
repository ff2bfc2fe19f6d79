"""One time limit per search request, across every photo it carries.

Each step of a search has its own bounded wait (a decode share, the model
slot), but a request with four photos could add those up past the proxy's
``proxy_read_timeout``: the client got nginx's 503 while the worker went on
decoding for nobody. A ``Deadline`` starts when the request reached the
worker (counting its wait for a thread), caps every wait at what is left,
and is checked before each photo and before the forward pass, so an expired
request stops its work and answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import time


class Busy(RuntimeError):
    """The server could not serve the request in time; answered 503 with ``Retry-After``."""

    reason = "model_queue"  # for the metrics: every model slot stayed taken


class DeadlinePassed(Busy):
    """The request's deadline passed before its work was done."""

    reason = "deadline"


class Deadline:
    """The moment by which one request must have its answer."""

    def __init__(self, seconds: float, already_waited_s: float = 0.0):
        self.seconds = seconds
        self._expires = time.monotonic() + seconds - max(0.0, already_waited_s)

    def remaining(self) -> float:
        """Seconds left (0.0 once expired)."""
        return max(0.0, self._expires - time.monotonic())

    def check(self) -> None:
        """Raise ``DeadlinePassed`` once the deadline has passed: the work for this request stops here."""
        if self.remaining() <= 0.0:
            raise DeadlinePassed(
                f"The search could not be finished within {self.seconds:g} s because the server is busy; "
                "please try again in a moment."
            )
