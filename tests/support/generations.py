"""Publishing a generation that fails verification, as a disk error or a tampered file would leave it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def publish_a_damaged_copy(index_dir: Path) -> str:
    """Publish a copy of the current generation with one flipped byte in its Annoy file; returns its name."""
    current = index_dir / os.readlink(index_dir / "current")
    damaged = current.with_name(current.name + "-damaged")
    shutil.copytree(current, damaged)
    with open(damaged / "index.ann", "r+b") as annoy:
        first = annoy.read(1)
        annoy.seek(0)
        annoy.write(bytes([first[0] ^ 0xFF]))
    (index_dir / "current.new").symlink_to(damaged.name)
    os.replace(index_dir / "current.new", index_dir / "current")
    return damaged.name
