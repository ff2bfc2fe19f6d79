"""Why OpenVINO: TensorFlow, OpenVINO fp32 and ONNX Runtime fp32 on the same graph, in one process.

Run from the repository root::

    pip install onnxruntime onnx && pip install --no-deps tf2onnx
    python -m benchmarks.bench_onnxruntime [--dataset DIR] [--rounds R]

ONNX Runtime and tf2onnx are not project requirements; this script exists to
show the measurement behind choosing OpenVINO as the fast runtime.
``tf2onnx`` is installed without its dependencies because it pins an old
protobuf that TensorFlow cannot import.

The project's exact forward function (uint8 -> cast -> ``preprocess_input``
-> ResNet50 -> GlobalMaxPooling -> L2, seeded weights) is converted to ONNX
by tf2onnx and to OpenVINO by the product's own ``runtimes.load_runtime``.
All three run with ``FASHION_TF_THREADS`` threads (default: every core).
Each round times one batch of 32 real photos and the median of five single
photos per runtime, rotating the order; a ratio to TensorFlow is the ratio
of the two medians over the rounds. The max abs difference to TensorFlow's
vectors is taken over the 32 photos.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEFAULT_DATASET, dataset_images, emit, load_average

log = logging.getLogger("bench_onnxruntime")


def _onnx_session(embedder, path: Path, threads: int):
    """Export the forward function with tf2onnx and open it in ONNX Runtime; returns ``embed(batch)``."""
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec([None, 224, 224, 3], tf.uint8)]
    tf2onnx.convert.from_function(embedder.forward_function, input_signature=spec, opset=17, output_path=str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image_input, *captured = session.get_inputs()
    if len(captured) > 1 or any(item.shape != [1, 1, 1, 3] for item in captured):
        raise RuntimeError(f"unexpected ONNX inputs beyond the image: {[(i.name, i.shape) for i in captured]}")
    # tf2onnx leaves the constant that preprocess_input captures (the BGR
    # channel means, shape 1x1x1x3) as a graph input; feed it its value
    means = np.array([103.939, 116.779, 123.68], dtype=np.float32).reshape(1, 1, 1, 3)
    extra = {item.name: means for item in captured}

    def embed(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {image_input.name: batch, **extra})[0]

    return embed


def main(argv: list[str] | None = None) -> int:
    """Convert, check and time the three runtimes; print the figures and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from indexer.config import FIELDS

    threads = FIELDS["tf_threads"].read(os.environ) or os.cpu_count() or 1

    from indexer.images import load_for_model
    from indexer.model import configure_threads, load_embedder
    from indexer.runtimes import OPENVINO, load_runtime

    load_before = load_average()
    configure_threads(threads)
    reference = load_embedder("none", threads=threads)
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp:
        openvino = load_runtime(
            reference.choice, OPENVINO, cache_dir=Path(tmp) / "models", threads=threads, reference=reference
        )
        embed = {
            "tensorflow": reference.embed,
            "openvino": openvino.embed,
            "onnxruntime": _onnx_session(reference, Path(tmp) / "model.onnx", threads),
        }
        batch = np.stack([load_for_model(p) for p in dataset_images(Path(args.dataset))[:32]])
        truth = reference.embed(batch)
        max_diff = {name: float(np.abs(run(batch) - truth).max()) for name, run in embed.items()}
        names = list(embed)
        batch_ips: dict[str, list[float]] = {name: [] for name in names}
        single_ms: dict[str, list[float]] = {name: [] for name in names}
        for round_no in range(args.rounds):
            for name in names[round_no % 3 :] + names[: round_no % 3]:
                started = time.perf_counter()
                embed[name](batch)
                batch_ips[name].append(len(batch) / (time.perf_counter() - started))
                times = []
                for image in batch[:5]:
                    started = time.perf_counter()
                    embed[name](image[None])
                    times.append(time.perf_counter() - started)
                single_ms[name].append(1000 * statistics.median(times))

    result = {"threads": threads, "rounds": args.rounds, "load_average": [load_before, load_average()]}
    tf_ips, tf_ms = statistics.median(batch_ips["tensorflow"]), statistics.median(single_ms["tensorflow"])
    for name in names:
        ips, ms = statistics.median(batch_ips[name]), statistics.median(single_ms[name])
        result[name] = {
            "batch32_ips": round(ips, 2),
            "batch32_x_tensorflow": round(ips / tf_ips, 3),
            "single_ms": round(ms, 1),
            "single_x_tensorflow": round(ms / tf_ms, 3),
            "max_abs_diff": max_diff[name],
        }
        emit(f"{name} batch-32", ips, f"images/s ({ips / tf_ips:.2f}x TensorFlow)")
        emit(f"{name} single photo", ms, f"ms ({ms / tf_ms:.2f}x TensorFlow)")
        emit(f"{name} max abs diff to TensorFlow", f"{max_diff[name]:.1e}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
