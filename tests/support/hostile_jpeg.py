"""Progressive JPEGs an attacker would send, written byte by byte in milliseconds.

Pillow takes seconds to encode an 8000 x 8000 progressive photo; these files
have the same frame and scans with all-zero coefficients (a grey picture),
so they are tiny and instant to make, and decode exactly as a decoder
decodes any progressive JPEG: one pass over the full-size coefficients per
scan. Each AC scan after the first is a few dozen bytes (a handful of
end-of-band runs covering every block), which is how a file of a few
hundred kilobytes holds thousands of scans.
"""

from __future__ import annotations

import struct

_EOBRUN_MAX = 32767
_EOBRUN_SYMBOL_MIN = 16384  # symbol 0xE0: a run of 2**14 + 14 extra bits


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


class _Bits:
    """Entropy-coded bits, with 0xFF bytes stuffed as JPEG requires."""

    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.count = 0

    def put(self, value: int, width: int) -> None:
        for shift in range(width - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> shift) & 1)
            self.count += 1
            if self.count == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = self.count = 0

    def done(self) -> bytes:
        if self.count:
            self.put((1 << (8 - self.count)) - 1, 8 - self.count)  # pad with ones
        return bytes(self.out)


def _ac_scan(component: int, blocks: int) -> bytes:
    """One AC scan of one component: end-of-band runs over all its ``blocks``."""
    bits = _Bits()
    left = blocks
    while left > 0:
        run = max(_EOBRUN_SYMBOL_MIN, min(left, _EOBRUN_MAX))  # a run may end past the last block
        bits.put(0, 1)  # the table's only code: symbol 0xE0
        bits.put(run - _EOBRUN_SYMBOL_MIN, 14)
        left -= run
    header = bytes([1, component + 1, 0x00, 1, 63, 0x00])  # one component, bands 1-63, first pass
    return _segment(0xDA, header) + bits.done()


def progressive_jpeg(width: int, height: int, *, components: int = 1, scans: int = 10) -> bytes:
    """A progressive JPEG of ``components`` full-resolution components (4 reads as CMYK) and ``scans`` scans.

    The first scan holds every component's DC coefficients, the others AC
    coefficients of one component each, in turn.
    """
    if scans < 2:
        raise ValueError("a progressive JPEG here has a DC scan and at least one AC scan")
    blocks = -(-width // 8) * -(-height // 8)
    frame = struct.pack(">BHHB", 8, height, width, components)
    frame += b"".join(bytes([c + 1, 0x11, 0]) for c in range(components))
    head = b"\xff\xd8" + _segment(0xDB, b"\x00" + bytes([1] * 64)) + _segment(0xC2, frame)
    head += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC table: difference 0 only
    head += _segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")  # AC table: long end-of-band runs only
    dc_header = bytes([components]) + b"".join(bytes([c + 1, 0x00]) for c in range(components)) + bytes([0, 0, 0])
    # one block of each component per MCU, each a zero difference: one 0 bit, the last byte padded with ones
    bits = blocks * components
    dc_data = bytes(bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")
    scans_data = [_segment(0xDA, dc_header) + dc_data]
    ac = [_ac_scan(c, blocks) for c in range(components)]
    scans_data += [ac[i % components] for i in range(scans - 1)]
    return head + b"".join(scans_data) + b"\xff\xd9"
