"""images.py: the one image path shared by the indexer and the web app."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from indexer import images
from indexer.images import INPUT_SIZE, ImageError, load_for_model, normalise, open_validated, prepare
from tests.corpus import BOMB_SIDE, EXIF_ORIENTATION, MEGAPIXEL_CASES, build_corpus, make_image, make_jpeg

CORPUS = {upload.name: upload for upload in build_corpus()}
# the 64-megapixel cases take a second or more each: the slow tier's
OK_CASES = [
    pytest.param(u, id=u.name, marks=[pytest.mark.slow] if u.name in MEGAPIXEL_CASES else [])
    for u in build_corpus()
    if u.expect == "ok"
]
REJECT_REASONS = {
    "empty_file": "empty",
    "text_as_jpg": "not_an_image",
    "html_as_png": "not_an_image",
    "truncated_jpeg": "unreadable",
    "truncated_png": "unreadable",
    "one_by_one": "too_small",
    "decompression_bomb": "too_large",
    "svg_as_image": "not_an_image",
    "zip_as_jpg": "not_an_image",
    "webp_huge": "too_large",
}


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


def _is_white(pixels: np.ndarray, tolerance: int = 6) -> bool:
    return bool((pixels >= 255 - tolerance).all())


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_corpus_reasons_cover_every_reject_case():
    assert set(REJECT_REASONS) == {u.name for u in build_corpus() if u.expect == "reject"}


@pytest.mark.slow  # makes every 64-megapixel case
def test_the_slow_tier_holds_exactly_the_64_megapixel_cases():
    sizes = {}
    for upload in build_corpus():
        if upload.expect == "ok":
            with Image.open(io.BytesIO(upload.data)) as img:  # the header only: no decode
                sizes[upload.name] = img.width * img.height
    assert {name for name, pixels in sizes.items() if pixels >= 60_000_000} == MEGAPIXEL_CASES


@pytest.mark.parametrize("upload", OK_CASES)
def test_valid_images_load_as_model_ready_rgb(upload):
    array = load_for_model(upload.data)
    assert array.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    assert array.dtype == np.uint8
    # every corpus picture is a coloured shape on white: never a blank frame
    assert array.std() > 10, "image came out blank"
    # corners are white background (the 16-bit case has a grey one by design)
    assert _is_white(array[:3, :3]) or upload.name == "png_16bit"


@pytest.mark.parametrize("upload", OK_CASES)
def test_prepare_gives_the_same_array_as_load_for_model(upload):
    """The build (prepare) and the query side (load_for_model) must agree pixel for pixel."""
    array, thumb = prepare(upload.data, thumb_size=64)
    assert np.array_equal(array, load_for_model(upload.data))
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format == "JPEG"
        assert max(img.size) <= 64


@pytest.mark.parametrize("name", sorted(REJECT_REASONS))
def test_bad_images_are_rejected_with_a_reason(name):
    with pytest.raises(ImageError) as info:
        load_for_model(CORPUS[name].data)
    assert info.value.reason == REJECT_REASONS[name]
    assert info.value.message  # something fit to show a person
    assert "<script>" not in info.value.message


def test_sources_can_be_bytes_paths_or_file_objects(tmp_path):
    data = make_jpeg((80, 120))
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    from_bytes = load_for_model(data)
    assert np.array_equal(from_bytes, load_for_model(path))
    assert np.array_equal(from_bytes, load_for_model(str(path)))
    assert np.array_equal(from_bytes, load_for_model(io.BytesIO(data)))


def test_missing_and_empty_files_are_rejected(tmp_path):
    with pytest.raises(ImageError) as info:
        load_for_model(tmp_path / "nope.jpg")
    assert info.value.reason == "unreadable"
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        load_for_model(empty)
    assert info.value.reason in ("empty", "not_an_image")


def test_exif_rotation_is_applied():
    data = CORPUS["exif_rotated_jpeg"].data
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.size == (128, 96) and raw.getexif()[EXIF_ORIENTATION] == 6
    with open_validated(data) as img:
        assert img.size == (96, 128)  # upright portrait

    got = load_for_model(data).astype(int)
    upright = np.asarray(normalise(make_image((96, 128), (30, 90, 200)))).astype(int)
    sideways = np.asarray(normalise(make_image((96, 128), (30, 90, 200)).transpose(Image.Transpose.ROTATE_90)))
    assert np.abs(got - upright).mean() < 3  # JPEG noise only
    assert np.abs(got - sideways.astype(int)).mean() > 20
    # portrait: padded with white on the left and right, not on top
    assert _is_white(got[:, :20])
    assert _is_white(got[:, -20:])
    # the rectangle sits in the upper left of the upright picture
    assert tuple(got[70, 90]) == pytest.approx((30, 90, 200), abs=20)


def _half_and_half(mode: str) -> Image.Image:
    """Left half fully transparent (with a dark colour underneath), right half half-transparent."""
    if mode == "RGBA":
        img = Image.new("RGBA", (64, 64), (200, 0, 0, 0))
        img.paste((0, 0, 255, 128), (32, 0, 64, 64))
    elif mode == "LA":
        img = Image.new("LA", (64, 64), (0, 0))
        img.paste((0, 128), (32, 0, 64, 64))
    else:  # palette: entry 0 is black and fully transparent, entry 1 opaque blue
        img = Image.new("P", (64, 64), 0)
        img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
        img.paste(1, (32, 0, 64, 64))
        img.info["transparency"] = 0
    return img


@pytest.mark.parametrize(
    ("mode", "right"), [("RGBA", (127, 127, 255)), ("LA", (127, 127, 127)), ("P", (0, 0, 255))]
)
def test_transparency_is_composited_onto_white(mode, right):
    data = _encode(_half_and_half(mode), "PNG", **({"transparency": 0} if mode == "P" else {}))
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == mode
    array = load_for_model(data).astype(int)
    assert _is_white(array[:, :100])  # transparent: white, whatever colour is underneath
    assert tuple(array[112, 180]) == pytest.approx(right, abs=3)


def test_transparent_black_becomes_white_and_shape_keeps_colour():
    array = load_for_model(CORPUS["rgba_png"].data)
    assert _is_white(array[:10, :10])
    assert _is_white(array[-10:, :10])
    # centre of the rectangle (0.15-0.60 x 0.10-0.55 of the picture)
    assert tuple(int(v) for v in array[int(0.32 * 224), int(0.37 * 224)]) == pytest.approx((200, 120, 30), abs=8)


def test_padding_keeps_aspect_with_white_bands():
    bar = Image.new("RGB", (200, 50), (220, 0, 0))  # wide red bar
    array = load_for_model(_encode(bar, "PNG")).astype(int)
    # 200x50 padded to 200x200: bar rows 75..125 -> 84..140 at 224
    assert _is_white(array[:80])
    assert _is_white(array[145:])
    middle = array[90:135]
    assert (middle[..., 0] > 200).all() and (middle[..., 1] < 30).all() and (middle[..., 2] < 30).all()

    tall = Image.new("RGB", (50, 200), (0, 0, 220))
    array = load_for_model(_encode(tall, "PNG")).astype(int)
    assert _is_white(array[:, :80])
    assert _is_white(array[:, 145:])
    assert (array[:, 90:135, 2] > 200).all()


def test_sixteen_bit_png_is_not_blank():
    data = CORPUS["png_16bit"].data
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode.startswith("I")
    array = load_for_model(data)
    # background ~49000/65535 -> ~190, shape ~7700/65535 -> ~30; a naive convert clips all to 255
    assert array.min() < 60
    assert 150 < np.median(array) < 230
    assert not _is_white(array)


def test_animated_gif_uses_the_first_frame():
    array = load_for_model(CORPUS["animated_gif"].data).astype(int)
    r, g, b = array[int(0.32 * 224), int(0.37 * 224)]
    assert r > 150 and g < 80 and b < 80  # the first frame is red


def test_bomb_is_rejected_from_its_header_alone():
    # Only the header: no pixel data at all. A decoder would fail with
    # "unreadable"; a header check says "too_large" before decoding anything.
    ihdr = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 2, 0, 0, 0)
    header_only = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")
    with pytest.raises(ImageError) as info:
        load_for_model(header_only)
    assert info.value.reason == "too_large"
    with pytest.raises(ImageError) as info:
        load_for_model(CORPUS["decompression_bomb"].data)
    assert info.value.reason == "too_large"


def _header_only_png(side: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def test_pixel_limit_boundary():
    # 8001 x 8001 is just above 64 Mpx: refused from the header
    assert 8001 * 8001 > images.MAX_PIXELS >= 8000 * 8000
    with pytest.raises(ImageError) as info:
        load_for_model(_header_only_png(8001))
    assert info.value.reason == "too_large"
    # 8000 x 8000 is allowed through the size check, then fails for lack of pixel data
    with pytest.raises(ImageError) as info:
        load_for_model(_header_only_png(8000))
    assert info.value.reason == "unreadable"


@pytest.mark.parametrize("size", [(1, 1), (31, 200), (200, 31)])
def test_too_small_is_rejected(size):
    data = _encode(Image.new("RGB", size, (10, 200, 10)), "PNG")
    with pytest.raises(ImageError) as info:
        load_for_model(data)
    assert info.value.reason == "too_small"


def test_smallest_allowed_side_is_accepted():
    data = _encode(make_image((images.MIN_SIDE, 100)), "PNG")
    assert load_for_model(data).shape == (INPUT_SIZE, INPUT_SIZE, 3)


def test_truncated_jpeg_of_a_real_photo_is_rejected():
    data = make_jpeg((300, 300))
    for cut in (len(data) // 3, len(data) * 2 // 3):
        with pytest.raises(ImageError) as info:
            load_for_model(data[:cut])
        assert info.value.reason == "unreadable"


def test_large_jpeg_is_downscaled_but_keeps_the_picture():
    big = load_for_model(CORPUS["large_jpeg"].data).astype(int)
    small = load_for_model(make_jpeg((400, 300), (60, 120, 180))).astype(int)
    assert big.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    assert np.abs(big - small).mean() < 6


def test_is_image_path():
    assert images.is_image_path("a/b/C.JPG")
    assert images.is_image_path("x.webp")
    assert not images.is_image_path("notes.txt")
    assert not images.is_image_path("styles.csv")


@pytest.mark.slow  # decodes a 64-megapixel image
def test_long_thin_image_is_fitted_without_a_huge_canvas():
    """A 32 x 2,000,000 PNG (192 KB) must not ask for a 2M x 2M padded square."""
    import io

    from PIL import Image

    from indexer.images import load_for_model

    buffer = io.BytesIO()
    Image.new("L", (32, 2_000_000), 0).save(buffer, "PNG")
    array = load_for_model(buffer.getvalue())
    assert array.shape == (224, 224, 3)
    assert array[:, :100].min() == 255 and array[:, 124:].min() == 255  # white padding left and right


def test_formats_outside_the_documented_list_are_refused():
    """EPS would hand PostScript to Ghostscript; PPM is simply not offered."""
    import io

    import pytest
    from PIL import Image

    from indexer.images import ImageError, load_for_model

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"
    ppm = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 0, 0)).save(ppm, "PPM")
    for data in (eps, ppm.getvalue()):
        with pytest.raises(ImageError) as caught:
            load_for_model(data)
        assert caught.value.reason == "not_an_image"


# ---------------------------------------------------------------- decoding on a memory budget

# Peak RSS from VmHWM, reset first: ru_maxrss would start from the forked
# test process's own peak and hide growth below it.
_PEAK_SCRIPT = """
import sys
from indexer.images import load_for_model

def peak_kb():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0])

data = sys.stdin.buffer.read()
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")
before = peak_kb()
array = load_for_model(data)
print((peak_kb() - before) // 1024, int(array.min()), int(array.max()))
"""


@pytest.mark.slow  # decodes a 64-megapixel image in a fresh process
@pytest.mark.parametrize(("case", "decoded_mb"), [("png_16bit_huge", 128), ("tiff_float_huge", 256)])
def test_huge_high_bit_depth_image_costs_little_more_than_its_decoded_size(case, decoded_mb):
    """A 64-megapixel 16-bit PNG grew a worker by 1.7 GB when converted as float64 in one piece."""
    grown_mb, low, high = _peak_growth(case)
    assert grown_mb < decoded_mb + 96, f"peak RSS grew by {grown_mb} MB"
    # 16-bit: scaled by the full range (65000 and 10000 of 65535); float: by its maximum (1.5 and 0.2)
    expected = (38, 252) if case == "png_16bit_huge" else (34, 255)
    assert (low, high) == expected


@pytest.mark.slow  # decodes a 64-megapixel image in a fresh process
@pytest.mark.parametrize(
    ("case", "decoded_mb"),
    [("png_16bit_wide", 128), ("png_16bit_tall", 128), ("tiff_float_wide", 256), ("png_palette_wide", 64)],
)
def test_long_thin_image_costs_little_more_than_its_decoded_size(case, decoded_mb):
    """A 2,000,000 x 32 strip was converted whole: the budget priced 128 MB, the worker grew 730 MB."""
    grown_mb, low, high = _peak_growth(case)
    assert grown_mb < decoded_mb + 96, f"peak RSS grew by {grown_mb} MB"
    assert low < high  # the dark middle third survives the reduction


def _peak_growth(case: str) -> tuple[int, int, int]:
    """Peak RSS growth (MB), darkest and brightest value of loading one corpus case in a fresh process."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT], input=CORPUS[case].data, capture_output=True, check=True,
        cwd=images.__file__.rsplit("/indexer/", 1)[0],
    )
    grown_mb, low, high = map(int, done.stdout.split())
    return grown_mb, low, high


def test_image_needing_more_than_the_budget_is_refused_naming_the_limit():
    with pytest.raises(ImageError) as info:
        load_for_model(CORPUS["webp_huge"].data)
    assert info.value.reason == "too_large"
    limit_mb = images.DECODE_BUDGET_BYTES // (1024 * 1024)
    assert f"the limit is {limit_mb} MB" in info.value.message
    assert "7999x7999 WEBP" in info.value.message


def test_decode_budget_refuses_alone_too_big_and_waits_for_its_share():
    import threading

    budget = images.DecodeBudget(limit_bytes=100, slots=2, wait_s=0.05)
    with pytest.raises(ImageError) as info:
        with budget.reserve(101):
            pass
    assert info.value.reason == "too_large"
    with budget.reserve(60):
        with pytest.raises(ImageError) as info:  # 60 + 60 > 100 bytes
            with budget.reserve(60):
                pass
        assert info.value.reason == "busy"
        with budget.reserve(30):  # fits beside the first
            with pytest.raises(ImageError):  # both slots taken
                with budget.reserve(1):
                    pass
    # released: a waiting decode gets its share as soon as the holder is done
    release = threading.Event()
    holder_in = threading.Event()

    def hold():
        with budget.reserve(100):
            holder_in.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    holder_in.wait(5)
    waiting = images.DecodeBudget.reserve  # same object, longer wait
    budget.wait_s = 5
    threading.Timer(0.1, release.set).start()
    with waiting(budget, 100):
        pass
    thread.join()


def test_busy_decoder_maps_to_503():
    from web.queries import _STATUS_FOR_REASON

    assert _STATUS_FOR_REASON["busy"] == 503
    assert _STATUS_FOR_REASON["too_large"] == 413


def test_early_reduction_keeps_the_exif_orientation():
    """A big PNG is reduced before EXIF rotation; the rotation must still be applied."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    picture = make_image((2400, 1200), (30, 30, 200))
    data = _encode(picture, "PNG", exif=exif.tobytes())
    with open_validated(data) as img:
        assert max(img.size) < images.EARLY_REDUCE_SIDE
        assert img.width < img.height  # rotated to portrait
    expected = load_for_model(_encode(picture.transpose(Image.Transpose.ROTATE_270), "PNG"))
    assert np.abs(load_for_model(data).astype(int) - expected.astype(int)).mean() < 2


@pytest.mark.slow  # decodes large photos both ways (about 3 s)
def test_early_reduction_gives_nearly_the_same_picture():
    big = make_image((4000, 3000), (200, 30, 30))
    small = make_image((800, 600), (200, 30, 30))
    for mode in ("RGB", "RGBA", "P", "CMYK"):
        got = load_for_model(_encode(big.convert(mode), "PNG" if mode != "CMYK" else "TIFF")).astype(int)
        assert np.abs(got - load_for_model(_encode(small, "PNG")).astype(int)).mean() < 3, mode


# ---------------------------------------------------------------- progressive JPEGs: priced at full size, scans counted


def test_a_progressive_jpeg_is_priced_at_its_full_size_not_its_draft():
    """An 8000 x 8000 progressive JPEG was priced 4 MB (its 1000 x 1000 draft); the decoder held 370 MB."""
    from tests.support.hostile_jpeg import progressive_jpeg

    limit_mb = images.DECODE_BUDGET_BYTES // (1024 * 1024)
    # colour 4:4:4 and CMYK: 366 and 488 MB of coefficients, and the 1000 x 1000 draft's 4 MB
    for components, needed_mb in ((3, 370), (4, 492)):
        with pytest.raises(ImageError) as info:
            load_for_model(progressive_jpeg(8000, 8000, components=components))
        assert info.value.reason == "too_large"
        assert f"would need about {needed_mb} MB" in info.value.message
        assert f"the limit is {limit_mb} MB per photo" in info.value.message
        assert "8000x8000 JPEG" in info.value.message
    cost, _ = images.decode_price(progressive_jpeg(8000, 8000, components=1))
    assert cost > 122 * 1024 * 1024  # within the budget, but priced for what it holds


def test_a_baseline_jpeg_is_still_priced_at_its_draft():
    data = make_jpeg(size=(4000, 3000))
    cost, describe = images.decode_price(data)
    assert cost < 4 * 1024 * 1024
    assert "4000x3000 JPEG" in describe


def test_a_jpeg_of_implausibly_many_scans_is_refused_before_decoding():
    from tests.support.hostile_jpeg import progressive_jpeg

    assert load_for_model(progressive_jpeg(640, 480, scans=images.MAX_JPEG_SCANS)).shape == (INPUT_SIZE, INPUT_SIZE, 3)
    with pytest.raises(ImageError) as info:
        load_for_model(progressive_jpeg(640, 480, scans=images.MAX_JPEG_SCANS + 1))
    assert info.value.reason == "too_many_scans"
    assert f"made of more than {images.MAX_JPEG_SCANS} scans" in info.value.message
    with pytest.raises(ImageError) as info:  # tens of thousands of scans: refused, not decoded for minutes
        images.decode_price(progressive_jpeg(2000, 2000, scans=40_000))
    assert info.value.reason == "too_many_scans"


def test_a_webp_over_the_budget_is_refused_before_pillow_opens_it():
    # libwebp maps the whole canvas when Pillow opens the file: the RIFF header must be priced first.
    # Only the header is real here: opened, this file would be "unreadable", not "too_large".
    canvas = (7998).to_bytes(3, "little") * 2  # width - 1, height - 1
    header = b"RIFF" + struct.pack("<I", 130) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4) + canvas
    assert images.webp_canvas(header) == (7999, 7999)
    with pytest.raises(ImageError) as info:
        load_for_model(header + b"\x00" * 100)
    assert info.value.reason == "too_large"
    assert "7999x7999 WEBP" in info.value.message
