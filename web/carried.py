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

    def dumps(self, vector: np.ndarray, colour: np.ndarray, manifest: dict) -> str:
        """``vector`` and its ``colour`` descriptor as signed text for a hidden form field."""
        values = np.concatenate([np.ravel(vector), np.ravel(colour)]).astype("<f2")
        text = base64.b64encode(values.tobytes()).decode("ascii")
        return self._signer(manifest).sign(text).decode("ascii")

    def loads(self, token: str, manifest: dict, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The unit vector and colour descriptor behind a token from ``dumps``; ``BadQuery`` for anything else."""
        try:
            text = self._signer(manifest).unsign((token or "").strip().encode("ascii"))
            values = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f2").astype(np.float32)
        except (BadSignature, UnicodeEncodeError, ValueError):
            raise BadQuery(_NOT_UNDERSTOOD, field="query") from None
        if values.shape != (dim + COLOUR_DIM,) or not np.isfinite(values).all():
            raise BadQuery(_NOT_UNDERSTOOD, field="query")
        vector, colour = values[:dim], values[dim:]
        if not np.linalg.norm(vector) or not np.linalg.norm(colour):
            raise BadQuery(_NOT_UNDERSTOOD, field="query")
        return vector / np.linalg.norm(vector), colour / np.linalg.norm(colour)
