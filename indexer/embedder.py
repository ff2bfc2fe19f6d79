"""The interface every embedder has, whatever runs it: what the build, the query pipeline and the web app use.

``indexer.model.Embedder`` (TensorFlow) and
``indexer.runtimes.OpenVinoEmbedder`` (OpenVINO fp32 or INT8) implement it,
and so does the tests' fake. Code that takes an embedder annotates it with
``Embedder`` from here, never with one of the implementations, so a
runtime can be swapped without touching it. Nothing here imports
TensorFlow or OpenVINO.

``input_size`` is the side of the square uint8 images ``embed`` takes: the
model's (``ModelSpec.input_size``), and so what every decode for it asks
``indexer.images`` for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # only for the annotation: importing model.py here would be a cycle
    from .model import WeightsChoice

__all__ = ["Embedder"]


@runtime_checkable
class Embedder(Protocol):
    """A loaded model: uint8 RGB squares in, L2-normalised float32 vectors (and activation maps) out.

    ``isinstance(x, Embedder)`` checks that every member is there (not
    their types). Implementations are thread-safe: the web app's build
    thread embeds while request threads search.
    """

    name: str  # the FASHION_MODEL name (indexer.models)
    input_size: int  # side of the square images it takes, in pixels
    dim: int  # length of its vectors
    weights_id: str  # recorded in the manifest: "imagenet", "file-<hash>", "random-seed<n>", ...
    runtime: str  # tensorflow | openvino | openvino-int8 (the tests' fake: fake)
    vector_space: str  # fp32, or int8-<calibration id>: vectors of two spaces are not compared
    choice: WeightsChoice  # the model and weights it was built from

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``(n, input_size, input_size, 3)`` uint8 images to ``(n, dim)`` float32 unit vectors."""
        ...

    def embed_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``embed`` and each image's ``(n, h, w)`` float32 activation map, from one pass."""
        ...

    def embed_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``embed`` and each image's map layer, ``(n, h, w, channels)`` float32.

        The map layer is the model's detail layer when it has one (Lite0's 14
        x 14), else its last feature layer. A catalogue's learned objectness
        (``indexer.objectness``) weighs its channels; without one, the map of
        ``embed_with_maps`` (the last layer's mean over channels) is used.
        """
        ...

    def embed_one(self, image: np.ndarray) -> np.ndarray:
        """One ``(input_size, input_size, 3)`` uint8 image to a ``(dim,)`` unit vector."""
        ...

    def warm_up(self) -> None:
        """Run the model once, so the first real request is not slow."""
        ...
