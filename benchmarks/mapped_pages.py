"""How much of a memory-mapped, cached file one random read maps into a process.

USS counts a file page as a worker's own while no other process has it
mapped. How many pages a small read maps is the kernel's choice: 4 KB pages
plus fault-around (64 KB) on some machines, whole large page-cache folios
(up to 2 MB) on others. This writes a file, reads it into the page cache,
maps it and reports, after 1, 10 and 100 random one-byte reads, how much of
it the process has mapped (``Rss`` of the mapping, and ``FilePmdMapped``,
the part mapped as 2 MB pages). The last line is one JSON object.

    python -m benchmarks.mapped_pages [--mb 256]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import sys
import tempfile


def mapping_kb(path: str) -> dict[str, int]:
    """``Rss``, ``Private_*`` and ``FilePmdMapped`` of this process's mapping of ``path``, in KB."""
    figures: dict[str, int] = {}
    inside = False
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split(None, 5)  # the path, the sixth field, may hold spaces
            if parts and "-" in parts[0] and not parts[0].endswith(":"):
                inside = len(parts) == 6 and parts[5].rstrip("\n") == path
            elif inside and parts[0] in ("Rss:", "Private_Clean:", "Private_Dirty:", "FilePmdMapped:"):
                figures[parts[0][:-1]] = figures.get(parts[0][:-1], 0) + int(parts[1])
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256, help="size of the file")
    args = parser.parse_args(argv)
    block = os.urandom(1 << 20)
    results = {}
    with tempfile.NamedTemporaryFile(prefix="mapped-pages-") as handle:
        for _ in range(args.mb):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
        with open(handle.name, "rb") as reader:  # into the page cache, as a served index is
            while reader.read(1 << 24):
                pass
        for reads in (1, 10, 100):
            with open(handle.name, "rb") as mapped_file:
                mapped = mmap.mmap(mapped_file.fileno(), 0, prot=mmap.PROT_READ)
                rng = random.Random(reads)
                for _ in range(reads):
                    mapped[rng.randrange(len(mapped))]
                figures = mapping_kb(os.path.realpath(handle.name))
                mapped.close()
            results[reads] = dict(figures, kb_per_read=round(figures.get("Rss", 0) / reads, 1))
            print(f"{reads:>4} random reads: {figures}", file=sys.stderr)
    print(json.dumps({"file_mb": args.mb, "after_reads": results, "kernel": os.uname().release}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
