"""The query vector a results page carries back for "show more": compact and signed.

The page holds each photo's vector and colour descriptor (float16, base64:
about 3.6 KB for Lite0), so "show more" needs neither the photo nor any
state kept between requests. The text is signed with the site's secret and the index's vector
space, so the server only accepts a vector it handed out itself, for the
model that is answering: a forged or edited vector, or one from before a
model switch, is refused with "please search again".
"""

from __future__ import annotations

import base64
import json

import numpy as np
from itsdangerous import BadSignature, Signer

from indexer.options import BadQuery
from indexer.query import COLOUR_DIM

# manifest fields that name a vector space (see indexer.plan.model_key)
_SPACE_FIELDS = ("model", "weights_id", "preprocess_version", "vector_space", "tuning")
_NOT_UNDERSTOOD = "The search to continue is not understood; please search again."


class CarriedVectors:
    """Signs query vectors for a page and checks them when the page sends them back."""

    def __init__(self, secret: bytes):
        self._secret = secret

    def _signer(self, manifest: dict) -> Signer:
        space = json.dumps({name: manifest.get(name) for name in _SPACE_FIELDS}, sort_keys=True)
        return Signer(self._secret, salt=f"show-more {space}")

    def dumps(self, vectors: np.ndarray, colours: np.ndarray, manifest: dict) -> str:
        """A photo's searched regions (one vector and colour descriptor each) as signed text for a hidden field."""
        vectors = np.atleast_2d(vectors)
        colours = np.atleast_2d(colours)
        values = np.concatenate([vectors, colours], axis=1).astype("<f2")
        text = base64.b64encode(values.tobytes()).decode("ascii")
        return self._signer(manifest).sign(text).decode("ascii")

    def loads(self, token: str, manifest: dict, dim: int, max_regions: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """The regions behind a token from ``dumps``: unit vectors ``(n, dim)`` and colours; ``BadQuery`` otherwise."""
        try:
            text = self._signer(manifest).unsign((token or "").strip().encode("ascii"))
            values = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f2").astype(np.float32)
        except (BadSignature, UnicodeEncodeError, ValueError):
            raise BadQuery(_NOT_UNDERSTOOD, field="query") from None
        width = dim + COLOUR_DIM
        if not values.size or values.size % width or values.size // width > max_regions:
            raise BadQuery(_NOT_UNDERSTOOD, field="query")
        values = values.reshape(-1, width)
        if not np.isfinite(values).all():
            raise BadQuery(_NOT_UNDERSTOOD, field="query")
        vectors, colours = values[:, :dim], values[:, dim:]
        vector_norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        colour_norms = np.linalg.norm(colours, axis=1, keepdims=True)
        if not vector_norms.all() or not colour_norms.all():
            raise BadQuery(_NOT_UNDERSTOOD, field="query")
        return vectors / vector_norms, colours / colour_norms
