"""What a JPEG's markers say about the work of decoding it, read before any pixel is decoded.

A progressive JPEG (or a sequential one whose components come in separate
scans) is decoded scan by scan into a coefficient buffer of the image's full
size, whatever reduced size the pixels are wanted at, and every scan walks
that whole buffer again. So its memory follows width x height x components,
and its time the number of scans: a few hundred kilobytes of tiny scans over
a large frame kept a decoder busy for minutes. ``read_layout`` walks the
markers the way libjpeg reads them, without decoding anything, and gives
what is needed to price such a file and to refuse an implausible one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A libjpeg coefficient block: 64 coefficients of 16 bits.
BLOCK_BYTES = 128

# Start-of-frame markers (C4 DHT, C8 JPG and CC DAC are not frames) and the progressive ones.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Markers without a length field: TEM, the restart markers, SOI and EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
_SOS, _EOI = 0xDA, 0xD9

# A marker is 0xFF (after any number of fill bytes 0xFF) and a byte other than
# 0x00 and 0xFF; 0xFF 0x00 is a stuffed data byte. The pattern matches the
# last 0xFF of a run and the marker byte.
_MARKER = re.compile(rb"\xff[^\x00\xff]")
# Inside a scan's entropy-coded data the restart markers belong to the scan.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


@dataclass(frozen=True)
class JpegLayout:
    """A JPEG's frame and scans, as its markers declare them.

    ``components`` holds each component's (horizontal, vertical) sampling
    factors, ``first_scan_components`` how many components the first scan
    carries. ``scans`` counts the start-of-scan markers up to the end of the
    image, or up to where the walk stopped (``complete`` is False then):
    after the first scan's header when only the header was read, at the
    scan past ``max_scans``, or after ``max_segments`` segments.
    """

    width: int
    height: int
    components: tuple[tuple[int, int], ...]
    progressive: bool
    first_scan_components: int
    scans: int
    segments: int
    complete: bool = True

    @property
    def multi_scan(self) -> bool:
        """True when libjpeg decodes through a full-size coefficient buffer.

        libjpeg's own test: the frame is progressive, or the first scan does
        not carry every component (each component comes in a scan of its own).
        """
        return self.progressive or 0 < self.first_scan_components < len(self.components)

    @property
    def coefficient_bytes(self) -> int:
        """Bytes of the full-image coefficient buffer a multi-scan decode allocates (libjpeg's layout)."""
        if not self.components:
            return 0
        h_max = max(h for h, _ in self.components)
        v_max = max(v for _, v in self.components)
        total = 0
        for h, v in self.components:
            # blocks covering the component at its sampling, rounded up to whole MCUs as libjpeg allocates them
            across = -(-self.width * h // (h_max * 8))
            down = -(-self.height * v // (v_max * 8))
            total += -(-across // h) * h * -(-down // v) * v
        return total * BLOCK_BYTES


def read_layout(
    data: bytes | memoryview, header_only: bool = False, max_scans: int | None = None, max_segments: int = 2000
) -> JpegLayout | None:
    """Walk a JPEG's markers as libjpeg reads them: its frame and how many scans it holds.

    Bytes between segments are skipped to the next marker (libjpeg does the
    same), a segment is skipped by its length field, and a scan's
    entropy-coded data ends at the first marker other than a restart marker.
    ``header_only`` stops at the first scan's header: enough to price the
    decode, and as cheap as reading the header. Otherwise the walk is linear
    in the size of ``data`` and stops at the scan after ``max_scans`` or
    after ``max_segments`` segments (real photos have a few dozen). Returns
    None when ``data`` does not start like a JPEG. Never decodes.
    """
    view = memoryview(data)
    if len(view) < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return None
    width = height = first_scan = scans = segments = 0
    components: tuple[tuple[int, int], ...] = ()
    progressive = False

    def layout(complete: bool) -> JpegLayout:
        return JpegLayout(width, height, components, progressive, first_scan, scans, segments, complete)

    position = 2
    while True:
        found = _MARKER.search(view, position)
        if found is None:
            break  # truncated: the decoder stops here too
        marker, position = found.group()[1], found.end()
        segments += 1
        if segments > max_segments:
            return layout(False)
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            continue
        if position + 2 > len(view):
            break
        length = int.from_bytes(view[position : position + 2], "big")
        payload = view[position + 2 : position + length]
        if marker in _SOF and not components and len(payload) >= 6:
            height = int.from_bytes(payload[1:3], "big")
            width = int.from_bytes(payload[3:5], "big")
            count = min(payload[5], (len(payload) - 6) // 3)
            # a factor of 0 is an error to libjpeg; 1 keeps the price finite until it says so
            components = tuple(
                (max(1, payload[7 + 3 * i] >> 4), max(1, payload[7 + 3 * i] & 0x0F)) for i in range(count)
            )
            progressive = marker in _PROGRESSIVE
        # libjpeg skips length - 2 bytes after the length field, none when the length is below 2
        position += max(2, length)
        if marker == _SOS:
            scans += 1
            if scans == 1:
                first_scan = payload[0] if len(payload) else 0
                if header_only:
                    return layout(False)
            if max_scans is not None and scans > max_scans:
                return layout(False)
            end = _SCAN_END.search(view, position)
            if end is None:
                break
            position = end.start()  # the next search finds this marker
    return layout(True)
