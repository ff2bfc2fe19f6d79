""""Show more" accepts only the vectors the server handed out, signed with the installation's secret."""

from __future__ import annotations

import base64
import html
import io
import os
import re
import stat
import threading

import numpy as np
import pytest

from indexer.colour import DIM as COLOUR_DIM
from indexer.config import ConfigError, Settings
from web.carried import CarriedVectors
from web.queries import BadQuery
from web.secret import SECRET_FILE, SecretError, load_secret

SPACE = {"model": "m", "weights_id": "w", "preprocess_version": "4", "vector_space": "fp32"}


def _show_more_form(client, demo_catalogue, item_id: int = 17) -> dict[str, list[str]]:
    photo = (io.BytesIO((demo_catalogue / f"{item_id}.jpg").read_bytes()), f"{item_id}.jpg")
    page = client.post("/search", data={"image": photo}, content_type="multipart/form-data").get_data(as_text=True)
    form = re.search(r'<form class="show-more".*?</form>', page, re.S).group(0)
    data: dict[str, list[str]] = {}
    for name, value in re.findall(r'name="([^"]+)" value="([^"]*)"', form):
        data.setdefault(html.unescape(name), []).append(html.unescape(value))
    return data


def _unsigned(values: np.ndarray) -> str:
    return base64.b64encode(values.tobytes()).decode("ascii")


def test_the_page_carries_a_signed_vector_that_show_more_accepts(client, demo_catalogue):
    data = _show_more_form(client, demo_catalogue)
    assert "." in data["query"][0]  # value.signature
    assert client.post("/search/more", data=data).status_code == 200


@pytest.mark.parametrize("forgery", ["float32", "unsigned_float16", "edited", "other_secret", "signature_only"])
def test_show_more_refuses_a_vector_the_server_did_not_sign(client, fake_app, demo_catalogue, forgery):
    data = _show_more_form(client, demo_catalogue)
    token = data["query"][0]
    value, signature = token.rsplit(".", 1)
    dim = fake_app.extensions["fashion.service"].searcher.embeddings.shape[1]
    length = dim + COLOUR_DIM  # a vector and its colour descriptor
    if forgery == "float32":  # the same byte size as a real vector, read as float16 it has the right length
        forged = _unsigned(np.random.default_rng(0).random(length // 2).astype("<f4"))
    elif forgery == "unsigned_float16":  # a well-formed vector of the right length, no signature
        forged = _unsigned(np.random.default_rng(1).random(length).astype("<f2"))
    elif forgery == "edited":  # one value changed, old signature kept
        forged = f"{'B' if value[0] != 'B' else 'C'}{value[1:]}.{signature}"
    elif forgery == "other_secret":  # signed properly, by another installation
        manifest = fake_app.extensions["fashion.service"].searcher.manifest
        forged = CarriedVectors(b"x" * 64).dumps(np.ones(dim, np.float32), np.ones(COLOUR_DIM, np.float32), manifest)
    else:
        forged = signature
    data["query"] = [forged]
    response = client.post("/search/more", data=data)
    assert response.status_code == 400
    assert "please search again" in response.get_data(as_text=True)


def test_a_token_is_bound_to_the_vector_space_it_came_from():
    carried = CarriedVectors(b"s" * 64)
    vector = np.random.default_rng(2).standard_normal(16).astype(np.float32)
    colour = np.random.default_rng(3).random(COLOUR_DIM).astype(np.float32)
    token = carried.dumps(vector, colour, SPACE)
    again, colour_again = carried.loads(token, SPACE, 16)
    assert np.allclose(again, vector / np.linalg.norm(vector), atol=1e-3)
    assert np.allclose(colour_again, colour / np.linalg.norm(colour), atol=1e-3)
    for field in SPACE:  # after a model or weights switch, old pages must search again
        with pytest.raises(BadQuery):
            carried.loads(token, SPACE | {field: "other"}, 16)
    with pytest.raises(BadQuery):
        carried.loads(token, SPACE, 32)  # right signature, wrong dimension
    with pytest.raises(BadQuery):
        carried.loads("é" * 10, SPACE, 16)


def test_every_worker_of_an_installation_accepts_the_others_pages(fake_index, make_fake_app, demo_catalogue):
    """Two apps over one index folder stand for two gunicorn workers: a page from one works on the other."""
    first, second = make_fake_app(fake_index), make_fake_app(fake_index)
    data = _show_more_form(first.test_client(), demo_catalogue)
    assert second.test_client().post("/search/more", data=data).status_code == 200


def test_secret_file_is_made_once_private_and_complete(tmp_path):
    index_dir = tmp_path / "index"
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(load_secret("", index_dir))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1 and len(results[0]) >= 32
    path = index_dir / SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in index_dir.iterdir()) == [SECRET_FILE]  # no temporary file left
    assert load_secret("", index_dir) == results[0]  # a restart reads the same secret
    assert load_secret("c" * 40, index_dir) == b"c" * 40  # a configured secret wins


def test_short_secrets_are_refused(tmp_path):
    (tmp_path / SECRET_FILE).write_text("short\n")
    with pytest.raises(SecretError, match="at least 32"):
        load_secret("", tmp_path)
    with pytest.raises(ConfigError, match="FASHION_SECRET_KEY"):
        Settings.from_env({"FASHION_SECRET_KEY": "tooshort"})
    settings = Settings.from_env({"FASHION_SECRET_KEY": "k" * 40})
    assert settings.secret_key == "k" * 40 and "k" * 40 not in repr(settings)
