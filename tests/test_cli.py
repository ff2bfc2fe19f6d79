"""The command line (run as a real subprocess) and resolving FASHION_WEIGHTS."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from indexer import generation
from indexer.build import build_index
from indexer.config import PROJECT_ROOT
from indexer.loading import load_index
from indexer.model import WeightsError, resolve_weights
from indexer.models.resnet50 import IMAGENET_NOTOP_FILE


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``python -m indexer ARGS`` from the project root, with random weights unless overridden."""
    environment = dict(os.environ, FASHION_WEIGHTS="none", TF_CPP_MIN_LOG_LEVEL="2")
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "indexer", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _where(settings) -> list[str]:
    return ["--catalogue", str(settings.catalogue), "--index-dir", str(settings.index_dir)]


def _index_for(request):
    """The index a validation case runs against: ``fake_index``, or ``built_index`` for a case marked slow.

    The cases fail before any model loads, so the fake's index serves, except
    where ``evaluate`` first refuses an index of other weights (the fake's) and
    only then reads ``--label``.
    """
    return request.getfixturevalue("built_index" if request.node.get_closest_marker("slow") else "fake_index")


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("build", "rebuild", "search", "evaluate", "demo"):
        assert command in result.stdout
    assert "FASHION_WEIGHTS" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_search_prints_json(built_index):
    query = built_index.catalogue / "5.jpg"
    result = run_cli("search", str(query), "--k", "3", *_where(built_index))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["query"] == str(query)
    results = answer["results"]
    assert len(results) == 3
    assert {"id", "filename", "distance", "similarity", "metadata"} <= set(results[0])
    # another process, the same seeded weights: the photo finds itself
    assert results[0]["filename"] == "5.jpg" and results[0]["id"] == "5"
    assert results[0]["distance"] < 1e-3
    assert results[0]["metadata"]["articleType"]
    # ranked as the site ranks: shape and the default share of colour
    assert answer["colour_weight"] == 0.2
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    for r in results:
        assert r["score"] == pytest.approx(0.8 * r["similarity"] + 0.2 * r["colour_similarity"], abs=1e-5)


@pytest.mark.slow  # precision figures of the real random-weights index
def test_evaluate_prints_json(built_index):
    result = run_cli("evaluate", "--k", "5", *_where(built_index))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["items"] == report["queries"] == report["labelled_queries"] == 144
    assert report["k"] == 5 and report["label"] == "articleType"
    assert 0.0 <= report["precision_at_k"] <= 1.0
    # 50 trees over 144 items: Annoy agrees with exact search
    assert report["annoy_recall_at_k"] >= 0.95
    # 8 equally common types: a random neighbour shares the type 17/143 of the time
    assert report["chance_precision"] == pytest.approx(17 / 143, abs=1e-3)
    assert report["weights_id"] == "random-seed1234"

    by_colour = json.loads(run_cli("evaluate", "--label", "baseColour", "--sample", "20", *_where(built_index)).stdout)
    assert by_colour["label"] == "baseColour" and by_colour["queries"] == 20

    # weighing colour finds more items of the query's colour, and the site's answers still match exact search
    shape = json.loads(
        run_cli("evaluate", "--label", "baseColour", "--colour-weight", "0", *_where(built_index)).stdout
    )
    default = json.loads(run_cli("evaluate", "--label", "baseColour", "--sample", "20", *_where(built_index)).stdout)
    assert default["colour_weight"] == 0.2  # by default it ranks as the site does
    joined = json.loads(
        run_cli("evaluate", "--label", "baseColour", "--colour-weight", "0.5", *_where(built_index)).stdout
    )
    assert shape["colour_weight"] == 0 and joined["colour_weight"] == 0.5
    assert joined["precision_at_k"] > shape["precision_at_k"] + 0.05
    assert joined["recall_at_k"] >= 0.95


def test_evaluate_without_an_index_fails_cleanly(tmp_path):
    result = run_cli("evaluate", "--catalogue", str(tmp_path), "--index-dir", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "no index" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # draws all 144 demo images again, in a subprocess
def test_demo_writes_a_catalogue(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"images": 144, "folder": str(out.resolve())}
    assert len(list(out.glob("*.jpg"))) == 144
    header = (out / "styles.csv").read_text().splitlines()[0]
    assert header.startswith("id,gender,masterCategory,subCategory,articleType,baseColour")


@pytest.mark.slow
def test_rebuild_reembeds_everything(tiny_settings, embedder):
    build_index(tiny_settings, embedder)
    before = load_index(tiny_settings.index_dir)
    before.annoy.unload()

    result = run_cli("rebuild", *_where(tiny_settings))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["total"], report["indexed"], report["reused"], report["removed"]) == (8, 8, 0, 0)
    assert report["summary"].startswith("8 items in index: indexed 8, reused 0, removed 0")
    after = load_index(tiny_settings.index_dir)
    after.annoy.unload()
    assert after.gen_dir != before.gen_dir
    assert after.filenames == before.filenames
    np.testing.assert_allclose(after.embeddings, before.embeddings, atol=1e-4)


# ---------------------------------------------------------------- weights


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.mark.slow  # Keras tries the download
@pytest.mark.parametrize("spec", ["auto", "imagenet"])
def test_resnet50_imagenet_unavailable_is_an_error_that_says_what_to_do(empty_keras_home, spec):
    # no internet here: the real download fails, and nothing falls back to random weights
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec, model="resnet50")
    message = str(info.value)
    assert IMAGENET_NOTOP_FILE in message
    assert str(empty_keras_home / "models") in message
    assert "FASHION_WEIGHTS" in message
    assert "FASHION_MODEL=efficientnet-lite0" in message
    assert not (empty_keras_home / "models" / IMAGENET_NOTOP_FILE).exists()


def test_default_model_has_real_weights_without_network(empty_keras_home):
    choice = resolve_weights("auto")
    assert (choice.model, choice.weights_id) == ("efficientnet-lite0", "imagenet")
    assert not choice.random and choice.source.endswith(".pth")


def test_none_means_seeded_random_weights():
    choice = resolve_weights("none", seed=7)
    assert choice.weights_id == "random-seed7" and choice.random


@pytest.mark.parametrize("model", ["efficientnet-lite0", "resnet50"])
def test_missing_weights_file_is_an_error(tmp_path, model):
    missing = tmp_path / "nope.h5"
    with pytest.raises(WeightsError) as info:
        resolve_weights(str(missing), model=model)
    assert str(missing) in str(info.value)


def test_weights_file_id_follows_its_content(tmp_path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"one")
    first = resolve_weights(str(path), model="resnet50")
    assert first.source == str(path) and first.weights_id.startswith("file-")
    path.write_bytes(b"two")
    assert resolve_weights(str(path), model="resnet50").weights_id != first.weights_id


@pytest.mark.slow
def test_cli_resnet50_imagenet_unavailable_exits_with_the_message(small_settings, tmp_path):
    keras_home = tmp_path / "keras-home"
    keras_home.mkdir()
    result = run_cli(
        "build", *_where(small_settings), FASHION_MODEL="resnet50", FASHION_WEIGHTS="auto", KERAS_HOME=str(keras_home)
    )
    assert result.returncode != 0
    assert IMAGENET_NOTOP_FILE in result.stderr
    assert str(keras_home / "models") in result.stderr
    assert "FASHION_WEIGHTS" in result.stderr
    assert "Traceback" not in result.stderr
    assert generation.current_generation(small_settings.index_dir) is None


@pytest.mark.slow
def test_search_stdout_is_only_json_with_real_weights(pretrained_index):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "indexer", "search", str(pretrained_index.catalogue / "5.jpg"),
         *_where(pretrained_index)],
        cwd=PROJECT_ROOT, env=dict(env, FASHION_WEIGHTS="auto"), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["id"] == "5"
    assert "oneDNN" not in result.stderr and "absl::InitializeLog" not in result.stderr  # TF start-up noise


@pytest.mark.slow
def test_keras_download_line_never_reaches_stdout(built_index, tmp_path):
    # ResNet50 with an empty Keras cache: Keras prints "Downloading data from ..." on stdout,
    # the download fails (no internet here) and the command stops with what to do
    keras_home = tmp_path / "keras-home"
    keras_home.mkdir()
    result = run_cli(
        "search", str(built_index.catalogue / "5.jpg"), *_where(built_index),
        FASHION_MODEL="resnet50", FASHION_WEIGHTS="auto", KERAS_HOME=str(keras_home),
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Downloading data from" in result.stderr  # moved to stderr, not dropped
    assert "FASHION_MODEL=efficientnet-lite0" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["search", "IMAGE", "--k", "0"], "--k: The number of results must be from 1 to 50; got 0."),
        (["search", "IMAGE", "--k", "51"], "--k: The number of results must be from 1 to 50; got 51."),
        (["search", "IMAGE", "--k", "-1"], "--k: The number of results must be a whole number from 1 to 50."),
        (["search", "IMAGE", "--crop", "0.5,0.5,0.6,0.2"], "--crop: The crop of photo 1 ('0.5,0.5,0.6,0.2') does not"),
        (["search", "IMAGE", "--colour-weight", "-0"], "--colour-weight: colour_weight must be a number from 0"),
        (["evaluate", "--k", "0"], "--k: The number of results must be from 1 to 50"),
        (["evaluate", "--colour-weight", "1.5"], "--colour-weight: colour_weight must be a number from 0"),
        pytest.param(
            ["evaluate", "--label", "nosuch"], "No item has a 'nosuch' label. Labels in this catalogue's styles.csv: ",
            marks=pytest.mark.slow,  # see _index_for
        ),
        (["search", "nosuch.jpg"], "is not a file"),
    ],
)
def test_cli_validates_like_the_api(request, args, words):
    index = _index_for(request)
    args = [str(index.catalogue / "5.jpg") if a == "IMAGE" else a for a in args]
    result = run_cli(*args, *_where(index))
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_cli_says_what_to_do_about_paths(fake_index, tmp_path):
    as_file = run_cli("build", "--catalogue", str(fake_index.catalogue / "5.jpg"), "--index-dir", str(tmp_path))
    assert as_file.returncode == 2 and "is a file, not a folder" in as_file.stderr
    no_index = run_cli("search", str(fake_index.catalogue / "5.jpg"), "--catalogue", str(fake_index.catalogue),
                       "--index-dir", str(tmp_path / "empty"))
    assert no_index.returncode == 2 and "run `python -m indexer build`" in no_index.stderr


def test_search_refuses_an_index_of_another_catalogue(fake_index, tmp_path):
    other = tmp_path / "other-shop"
    other.mkdir()
    result = run_cli(
        "search", str(fake_index.catalogue / "5.jpg"),
        "--catalogue", str(other), "--index-dir", str(fake_index.index_dir),
    )
    assert result.returncode == 2 and result.stdout == ""
    assert f"belongs to the catalogue {fake_index.catalogue}, not {other}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["build", "--catalogue", "MISSING"], "The catalogue folder MISSING does not exist"),
        (["rebuild", "--catalogue", "MISSING"], "The catalogue folder MISSING does not exist"),
        (["evaluate", "--against", "MISSING"], "There is no index yet in MISSING"),
        pytest.param(["evaluate", "--label", "colour"], "No item has a 'colour' label", marks=pytest.mark.slow),
        (["search", "MISSING"], "MISSING is not a file"),
    ],
)
def test_bad_arguments_fail_before_any_model_loads_and_create_nothing(request, tmp_path, args, words):
    index = _index_for(request)
    missing = tmp_path / "no-such-folder"
    args = [str(missing) if a == "MISSING" else a for a in args]
    index_dir = tmp_path / "index" if args[0] in ("build", "rebuild") else index.index_dir
    catalogue = [] if "--catalogue" in args else ["--catalogue", str(index.catalogue)]
    result = run_cli(*args, *catalogue, "--index-dir", str(index_dir))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words.replace("MISSING", str(missing)) in lines[0], result.stderr
    assert result.stdout == ""
    assert not missing.exists() and not (tmp_path / "index").exists()  # nothing was created


@pytest.mark.slow
def test_every_command_prints_only_json_on_stdout(tiny_settings, tmp_path):
    """``python -m indexer <command> | python -m json.tool`` works for every command."""
    where = _where(tiny_settings)
    image = str(next(tiny_settings.catalogue.glob("*.jpg")))
    commands = [
        ("demo", "--out", str(tmp_path / "demo")),
        ("build", *where),
        ("build", *where),  # nothing to do: "up to date", still JSON
        ("search", image, *where),
        ("evaluate", "--label", "articleType", *where),
        ("runtime", *where),
    ]
    for command in commands:
        result = run_cli(*command)
        assert result.returncode == 0, (command, result.stderr)
        json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert json.loads(run_cli("build", *where).stdout)["up_to_date"] is True


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, fields",
    [
        ([], {}),
        (["--no-locate"], {"locate": "false"}),
        (["--crop", "0.1,0.2,0.6,0.7"], {"crop": "0.1,0.2,0.6,0.7"}),
        (["--colour-weight", "0", "--k", "7"], {"colour_weight": "0", "k": "7"}),
    ],
)
def test_the_cli_and_the_api_return_the_same_ids(demo_app, built_index, demo_catalogue, tmp_path, flags, fields):
    """One query pipeline: the same photo and options give the same ids, box and scores from both."""
    from tests.test_locate import composite

    data, _ = composite(demo_catalogue / "23.jpg", seed=5)
    photo = tmp_path / "shopper.jpg"
    photo.write_bytes(data)
    result = run_cli("search", str(photo), *flags, *_where(built_index))
    assert result.returncode == 0, result.stderr
    cli = json.loads(result.stdout)
    api = demo_app.test_client().post(
        "/api/search", data={"image": (io.BytesIO(data), "shopper.jpg"), **fields}, content_type="multipart/form-data"
    ).get_json()
    (query,) = api["queries"]
    assert [r["id"] for r in cli["results"]] == [r["id"] for r in query["results"]]
    assert cli["box"] == query["box"] and cli["located"] == query["located"]
    assert [r["match"] for r in cli["results"]] == [r["match"] for r in query["results"]]
    assert cli["locate"] == query_locate(fields) and api["locate"] == query_locate(fields)


def query_locate(fields: dict) -> bool:
    return fields.get("locate") != "false"


def test_evaluate_refuses_an_index_that_is_not_what_the_site_would_serve(fake_index, tmp_path):
    """Another catalogue's index, or one tuned otherwise than FASHION_TUNING says: one line, exit 2, at once."""
    other = tmp_path / "other-catalogue"
    other.mkdir()
    elsewhere = run_cli("evaluate", "--catalogue", str(other), "--index-dir", str(fake_index.index_dir))
    assert elsewhere.returncode == 2 and elsewhere.stdout == ""
    assert f"belongs to the catalogue {fake_index.catalogue}" in elsewhere.stderr
    assert "Evaluate that one with --catalogue" in elsewhere.stderr
    tuned = run_cli("evaluate", *_where(fake_index), FASHION_TUNING="on")
    assert tuned.returncode == 2 and tuned.stdout == ""
    assert "published with FASHION_TUNING=off, but it is on here" in tuned.stderr
    assert "Traceback" not in elsewhere.stderr + tuned.stderr


def test_demo_into_a_file_says_what_out_is(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    done = run_cli("demo", "--out", str(target))
    assert done.returncode == 2 and "is a file: --out names the folder" in done.stderr
    assert target.read_text() == "keep me" and "Traceback" not in done.stderr
