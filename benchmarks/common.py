"""Small helpers shared by the benchmark scripts.

The API is deliberately small:

- ``REPO_ROOT``; ``DEFAULT_DATASET``: the shared 3,000-photo dev dataset, next to the repo.
- ``dataset_images(dataset)``: the dataset's image files, sorted.
- ``make_catalogue(images, dest, styles=...)``: a throw-away catalogue folder
  with copies of a subset of images and the matching rows of ``styles.csv``.
- ``add_images(catalogue, sources, ...)``: copy new files into a catalogue,
  e.g. for an incremental build.
- ``rss_mb(pid)``, ``peak_rss_mb(pid)``: current and peak RSS of this process
  (default) or of ``pid`` (Linux ``/proc/<pid>/status``); ``reset_peak_rss()``
  restarts this process's peak so one phase can be measured;
  ``children_peak_rss_mb()``: the largest peak of any waited-for child
  process (``getrusage``).
- ``load_average()``: the 1-minute load, to judge whether a run was disturbed.
- ``emit(label, value, unit)``: print one figure as a plain ``label: value unit`` line.

Nothing here imports TensorFlow, so a parent process that only orchestrates
children stays small.
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
from pathlib import Path

from indexer.images import is_image_path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "datasets" / "fashion-dev"


def dataset_images(dataset: Path) -> list[Path]:
    """All image files below ``dataset`` (recursively), sorted by path."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise FileNotFoundError(f"dataset folder {dataset} does not exist")
    return sorted(p for p in dataset.rglob("*") if is_image_path(p) and p.is_file())


def make_catalogue(images: list[Path], dest: Path, styles: Path | None = None) -> Path:
    """Create ``dest`` as a catalogue holding copies of ``images``.

    Copies, not links: the catalogue scan ignores symlinks that point out of
    the catalogue, and a hard link would let a benchmark that touches or
    rewrites catalogue files change the shared dataset. The copies are flat,
    named after the source files (which must therefore have distinct names).
    If ``styles`` (a Kaggle-format ``styles.csv``) is given, the rows whose
    ``id`` is one of the images' stems are copied into ``dest/styles.csv``.
    Returns ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    add_images(dest, images, subdir="")
    if styles is not None and Path(styles).is_file():
        stems = {Path(image).stem for image in images}
        with (
            open(styles, newline="", encoding="utf-8") as src,
            open(dest / "styles.csv", "w", newline="", encoding="utf-8") as out,
        ):
            reader = csv.reader(src)
            writer = csv.writer(out)
            header = next(reader, None)
            if header:
                writer.writerow(header)
                for row in reader:
                    if row and row[0] in stems:
                        writer.writerow(row)
    return dest


def add_images(catalogue: Path, sources: list[Path], *, subdir: str = "added", prefix: str = "") -> list[Path]:
    """Copy ``sources`` into ``catalogue/subdir`` as ``prefix + name``; returns the new paths.

    Each copy is a new file with a fresh mtime, so an incremental build sees
    it as new (or, over an existing file, as changed).
    """
    folder = Path(catalogue) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    added = []
    for source in sources:
        target = folder / f"{prefix}{Path(source).name}"
        shutil.copyfile(source, target)
        added.append(target)
    return added


def _status_kb(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_mb(pid: int | str = "self") -> float:
    """Current resident set size of a process, in MB (``VmRSS``)."""
    return _status_kb("VmRSS", pid) / 1024


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident set size of a process since start or the last reset, in MB (``VmHWM``)."""
    return _status_kb("VmHWM", pid) / 1024


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0).

    Lets one process measure the peak of a single phase. Returns False when
    the kernel refuses, in which case the peak covers the whole process.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def children_peak_rss_mb() -> float:
    """Largest peak RSS of any terminated, waited-for child process, in MB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def emit(label: str, value, unit: str = "") -> None:
    """Print one figure as a plain line: ``label: value unit``."""
    if isinstance(value, float):
        value = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    print(f"{label}: {value}{' ' + unit if unit else ''}", flush=True)
