"""indexer/jpeg_layout.py: a JPEG's frame and scans, read from its markers as libjpeg reads them."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from indexer.jpeg_layout import read_layout
from tests.corpus import make_image
from tests.support.hostile_jpeg import progressive_jpeg


def _pillow_jpeg(mode: str = "RGB", size=(320, 240), **options) -> bytes:
    out = io.BytesIO()
    make_image(size).convert(mode).save(out, "JPEG", **options)
    return out.getvalue()


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


@pytest.mark.parametrize(
    ("mode", "options", "scans"),
    [
        ("RGB", {}, 1),
        ("RGB", {"progressive": True}, 10),  # libjpeg's script for YCbCr
        ("L", {"progressive": True}, 6),
        ("CMYK", {"progressive": True}, 18),
        ("RGB", {"progressive": True, "optimize": True, "subsampling": 0}, 10),
    ],
)
def test_scans_of_the_files_pillow_writes(mode, options, scans):
    layout = read_layout(_pillow_jpeg(mode, **options))
    assert layout.scans == scans
    assert layout.complete
    assert layout.multi_scan == bool(options.get("progressive"))
    assert (layout.width, layout.height) == (320, 240)


def test_crafted_scans_are_counted_exactly_and_the_files_decode():
    for scans in (2, 10, 101, 1000):
        data = progressive_jpeg(256, 128, components=3, scans=scans)
        assert read_layout(data).scans == scans
        with Image.open(io.BytesIO(data)) as img:  # a valid file: the decoder goes through every scan
            img.load()
            assert img.size == (256, 128)


def test_full_size_coefficients_are_priced_from_the_frame():
    mib = 1024 * 1024
    # 2 bytes a coefficient: 4:4:4 colour and CMYK at 8000 x 8000, as the decoder allocates them
    assert read_layout(progressive_jpeg(8000, 8000, components=3)).coefficient_bytes == 384_000_000
    assert read_layout(progressive_jpeg(8000, 8000, components=4)).coefficient_bytes == 512_000_000
    assert read_layout(progressive_jpeg(8000, 8000, components=1)).coefficient_bytes // mib == 122
    # 4:2:0 (Pillow's default): the chroma planes are a quarter each, rounded up to whole MCUs
    subsampled = read_layout(_pillow_jpeg("RGB", (1001, 999), progressive=True))
    assert subsampled.components == ((2, 2), (1, 1), (1, 1))
    luma = 126 * 126  # 1001 and 999 px: 126 and 125 blocks, rounded up to MCUs of 2 blocks
    chroma = 63 * 63  # half the pixels each way: 63 blocks
    assert subsampled.coefficient_bytes == (luma + 2 * chroma) * 128


def test_a_baseline_file_decodes_without_a_coefficient_buffer():
    layout = read_layout(_pillow_jpeg())
    assert not layout.multi_scan  # priced at its drafted pixels, as before


def test_a_sequential_file_in_separate_scans_is_multi_scan():
    # libjpeg's own test: the frame is progressive, or its first scan does not carry every component
    frame = _segment(0xC0, struct.pack(">BHHB", 8, 64, 64, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00")
    interleaved = _segment(0xDA, bytes([3, 1, 0, 2, 0, 3, 0, 0, 63, 0]))
    one_component = _segment(0xDA, bytes([1, 1, 0, 0, 63, 0]))
    assert not read_layout(b"\xff\xd8" + frame + interleaved + b"\xff\xd9").multi_scan
    separate = read_layout(b"\xff\xd8" + frame + one_component + b"\xff\xd9")
    assert separate.first_scan_components == 1
    assert separate.multi_scan
    assert separate.coefficient_bytes == 3 * 8 * 8 * 128


def test_markers_inside_segments_stuffing_restarts_and_fill_bytes_are_not_scans():
    sos = _segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
    app = _segment(0xE1, b"Exif\x00\x00" + sos * 3)  # a scan header inside a segment's payload is payload
    entropy = b"\x12\xff\x00\x34\xff\xd0\x56\xff\xd7\x78"  # stuffed 0xFF and restart markers belong to the scan
    data = b"\xff\xd8" + app + b"\xff\xff\xff" + sos + entropy + b"junk" + sos + b"\x00" + b"\xff\xd9" + sos
    layout = read_layout(data)
    assert layout.scans == 2  # the one after the end of the image is not read either
    assert layout.complete


def test_short_lengths_truncation_and_other_files_do_not_break_the_walk():
    assert read_layout(b"\x89PNG\r\n\x1a\n") is None
    assert read_layout(b"") is None
    # a length below 2 skips nothing (libjpeg reads on right after it)
    layout = read_layout(b"\xff\xd8\xff\xe0\x00\x00\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\x00")
    assert layout.scans == 1
    truncated = progressive_jpeg(64, 64, scans=20)[:-100]
    assert 0 < read_layout(truncated).scans < 20
    assert read_layout(b"\xff\xd8\xff\xda").scans == 0  # cut inside the length


def test_the_walk_stops_past_max_scans_or_max_segments():
    data = progressive_jpeg(64, 64, scans=5000)
    past = read_layout(data, max_scans=100)
    assert (past.scans, past.complete) == (101, False)
    layout = read_layout(data, max_segments=100)
    assert not layout.complete
    assert layout.scans < 100
    assert read_layout(progressive_jpeg(64, 64, scans=100), max_scans=100).complete
