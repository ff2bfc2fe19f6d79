"""Searcher: self-retrieval through the shared image path, exact filters and the exact fallback."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.images import load_for_model
from indexer.plan import key_for
from indexer.publish import publish
from indexer.search import FILTER_FIELDS, ColourQuery, Searcher, UnknownItem
from tests.corpus import EXIF_ORIENTATION


@pytest.fixture(scope="module")
def searcher(fake_index, fake_embedder):
    found = Searcher.load(fake_index.index_dir, expect=key_for(fake_embedder))
    yield found
    found.index.annoy.unload()


@pytest.fixture(scope="module")
def pretrained_searcher(pretrained_index, pretrained_embedder):
    found = Searcher.load(pretrained_index.index_dir, expect=key_for(pretrained_embedder))
    yield found
    found.index.annoy.unload()


def _styles(catalogue: Path) -> list[dict[str, str]]:
    with open(catalogue / "styles.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _decoded(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


def _sideways_with_exif(upright: Image.Image, fmt: str, **kwargs) -> bytes:
    """Store the picture rotated 90 degrees with EXIF Orientation=6, which undoes it."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[EXIF_ORIENTATION] = 6
    out = io.BytesIO()
    stored.save(out, fmt, exif=exif.tobytes(), **kwargs)
    return out.getvalue()


# ---------------------------------------------------------------- finding itself


# 1 is 300x300, 3 is portrait 240x320, 6 is landscape 320x240
@pytest.mark.parametrize("name", ["1.jpg", "3.jpg", "6.jpg", "100.jpg"])
def test_catalogue_image_finds_itself_first(name, searcher, fake_embedder, fake_index):
    vector = fake_embedder.embed_one(load_for_model(fake_index.catalogue / name))
    hits = searcher.search(vector, 5)
    assert len(hits) == 5
    assert searcher.filenames[hits[0].row] == name
    assert hits[0].distance < 1e-3
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert hits[1].distance > 0.01  # and nothing else is the same picture
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["3.jpg", "6.jpg"])
def test_exif_rotated_copy_of_a_non_square_image_finds_it(name, pretrained_searcher, pretrained_embedder):
    # real features: with random weights a sideways picture is barely further than a re-encode
    searcher, embedder = pretrained_searcher, pretrained_embedder
    upright = _decoded(Path(searcher.manifest["catalogue"]) / name)
    assert upright.width != upright.height

    # lossless: the upright pixels are exactly the catalogue's, so distance ~0
    lossless = _sideways_with_exif(upright, "PNG")
    hits = searcher.search(embedder.embed_one(load_for_model(lossless)), 3)
    assert searcher.filenames[hits[0].row] == name
    assert hits[0].distance < 1e-3

    # lossy re-encode: still itself first, clearly closer than anything else
    lossy = _sideways_with_exif(upright, "JPEG", quality=90)
    hits = searcher.search(embedder.embed_one(load_for_model(lossy)), 3)
    assert searcher.filenames[hits[0].row] == name
    assert hits[0].distance < hits[1].distance / 3

    # the same sideways pixels without the EXIF tag are a different picture
    plain = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(plain, "PNG")
    row = searcher.filenames.index(name)
    sideways = embedder.embed_one(load_for_model(plain.getvalue()))
    # (real features: about 10x further than the lossy copy; 5x leaves room for other CPUs' rounding)
    assert np.linalg.norm(sideways - searcher.vector(row)) > 5 * max(hits[0].distance, 1e-3)


def test_similar_excludes_the_item_itself(searcher):
    for row in range(0, len(searcher), 11):
        item_id = searcher.ids[row]
        got_row, hits = searcher.similar(item_id, 5)
        assert got_row == row
        assert len(hits) == 5
        assert row not in [h.row for h in hits]
        # the same neighbours as an exact search, minus the item itself
        exact = [h.row for h in searcher.exact(searcher.vector(row), 6) if h.row != row][:5]
        assert [h.row for h in hits] == exact


def test_similar_with_filters(searcher):
    row = searcher.filenames.index("1.jpg")
    wanted = searcher.metadata[row]["articleType"]
    _, hits = searcher.similar(searcher.ids[row], 4, {"articleType": wanted})
    assert len(hits) == 4
    assert row not in [h.row for h in hits]
    assert all(searcher.metadata[h.row]["articleType"] == wanted for h in hits)


def test_unknown_item(searcher):
    with pytest.raises(UnknownItem):
        searcher.similar("no-such-item", 5)


def test_ids_are_file_stems_and_describe(searcher):
    assert searcher.ids[:3] == [Path(f).stem for f in searcher.filenames[:3]]
    row = searcher.row_of("42")
    info = searcher.describe(row)
    assert info["filename"] == "42.jpg" and info["id"] == "42"
    assert info["metadata"]["articleType"] and info["thumb"].endswith(".jpg")


# ---------------------------------------------------------------- filters


def test_facets_list_the_distinct_values(searcher, fake_index):
    styles = _styles(fake_index.catalogue)
    facets = searcher.facets()
    assert set(facets) == set(FILTER_FIELDS)
    for name in FILTER_FIELDS:
        assert facets[name] == sorted({row[name] for row in styles})
    assert len(facets["articleType"]) == 8 and len(facets["baseColour"]) == 6


FILTERS = [
    {"articleType": "Tshirts"},
    {"baseColour": "Red"},
    {"gender": "Women"},
    {"masterCategory": "Footwear"},
    {"articleType": "Dresses", "baseColour": "Navy Blue"},
    {"gender": "Men", "subCategory": "Topwear"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "+".join(f.values()))
@pytest.mark.parametrize("k", [1, 5, 20])
def test_filters_are_exact_and_fill_k(filters, k, searcher, fake_embedder, fake_index):
    matching = [row for row, meta in enumerate(searcher.metadata) if all(meta.get(f) == v for f, v in filters.items())]
    assert matching, "the demo catalogue should have items for every filter here"
    for query in ("1.jpg", "77.jpg"):
        vector = searcher.vector(searcher.filenames.index(query))
        hits = searcher.search(vector, k, filters)
        assert len(hits) == min(k, len(matching))
        assert {h.row for h in hits} <= set(matching)
        distances = [h.distance for h in hits]
        assert distances == sorted(distances)
        # nothing that matches was passed over for something farther
        exact = searcher.exact(vector, len(hits), np.isin(np.arange(len(searcher)), matching))
        np.testing.assert_allclose(distances, [h.distance for h in exact], atol=1e-5)


def test_filter_without_matches_gives_nothing(searcher):
    assert searcher.search(searcher.vector(0), 5, {"articleType": "Spacesuits"}) == []
    assert searcher.search(searcher.vector(0), 0) == []


def _synthetic_searcher(tmp_path: Path) -> tuple[Searcher, np.ndarray]:
    """90 items near +e0 tagged "near", 10 near -e0 tagged "far" (real Annoy, real files)."""
    rng = np.random.default_rng(7)
    dim = 16
    axis = np.zeros(dim, np.float32)
    axis[0] = 1.0
    near = axis + 0.05 * rng.normal(size=(90, dim))
    far = -axis + 0.05 * rng.normal(size=(10, dim))
    vectors = np.vstack([near, far]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metadata = [{"baseColour": "near"}] * 90 + [{"baseColour": "far"}] * 10
    publish(
        tmp_path,
        embeddings=vectors,
        filenames=[f"{i}.jpg" for i in range(100)],
        metadata=metadata,
        manifest={"model": "synthetic"},
        trees=50,
    )
    return Searcher.load(tmp_path), axis


def test_falls_back_to_exact_search_when_annoy_candidates_are_too_few(tmp_path):
    searcher, query = _synthetic_searcher(tmp_path)
    k = 2
    # the Searcher asks Annoy for 2k/fraction = 40 candidates (fewer than half the
    # index); every one of them is "near", so none passes a "far" filter
    candidates = searcher.index.annoy.get_nns_by_vector(query.tolist(), 40)
    assert all(searcher.metadata[r]["baseColour"] == "near" for r in candidates)

    hits = searcher.search(query, k, {"baseColour": "far"})
    assert len(hits) == k
    assert all(searcher.metadata[h.row]["baseColour"] == "far" for h in hits)
    far_rows = np.arange(90, 100)
    exact = sorted(far_rows, key=lambda r: np.linalg.norm(searcher.embeddings[r] - query))[:k]
    assert [h.row for h in hits] == exact
    expected = [float(np.linalg.norm(searcher.embeddings[r] - query)) for r in exact]
    np.testing.assert_allclose([h.distance for h in hits], expected, atol=1e-5)

    # all ten when asked for more than there are
    assert sorted(h.row for h in searcher.search(query, 15, {"baseColour": "far"})) == list(far_rows)
    searcher.index.annoy.unload()


def test_unfiltered_search_matches_exact(tmp_path):
    searcher, query = _synthetic_searcher(tmp_path)
    hits = searcher.search(query, 10)
    exact = searcher.exact(query, 10)
    assert [h.row for h in hits] == [h.row for h in exact]
    np.testing.assert_allclose([h.distance for h in hits], [h.distance for h in exact], atol=1e-5)
    searcher.index.annoy.unload()


# ---------------------------------------------------------------- re-ranking


def _clustered_searcher(
    tmp_path: Path, n: int = 600, dim: int = 32, trees: int = 10, spread: float = 0.3
) -> Searcher:
    """``n`` unit vectors in 30 tight clusters, 3 colours; real Annoy, real files."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(30, dim))
    vectors = (centres[rng.integers(0, 30, n)] + spread * rng.normal(size=(n, dim))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    colours = ["Red", "Blue", "Green"]
    publish(
        tmp_path,
        embeddings=vectors,
        filenames=[f"{i}.jpg" for i in range(n)],
        metadata=[{"baseColour": colours[i % 3], "gender": "Men" if i % 7 else "Women"} for i in range(n)],
        manifest={"model": "clusters"},
        trees=trees,
    )
    return Searcher.load(tmp_path)


def test_reranked_results_equal_exact_search(tmp_path):
    searcher = _clustered_searcher(tmp_path)
    n = len(searcher)
    assert searcher.candidates < n // 2  # unfiltered queries go through Annoy, not the exact fallback
    for row in range(0, n, 7):
        vector = searcher.vector(row)
        hits = searcher.search(vector, 5)
        exact = searcher.exact(vector, 5)
        assert [(h.row, h.distance) for h in hits] == [(h.row, h.distance) for h in exact]
        # more like this: the same path with the item left out
        _, similar = searcher.similar(searcher.ids[row], 5)
        others = np.ones(n, bool)
        others[row] = False
        assert [h.row for h in similar] == [h.row for h in searcher.exact(vector, 5, others)]
    searcher.index.annoy.unload()


def test_filtered_search_through_annoy_and_exactly_agree(tmp_path):
    searcher = _clustered_searcher(tmp_path)
    loose = {"gender": "Men"}  # 6/7 of the rows: above the exact limit, so Annoy candidates are filtered
    selective = {"gender": "Women", "baseColour": "Red"}  # 1/21 of the rows: exact over the matches
    searcher.exact_limit = int(searcher.metadata.mask(selective).sum())
    assert searcher.metadata.mask(loose).sum() > searcher.exact_limit
    for filters in (loose, selective):
        mask = searcher.metadata.mask(filters)
        for row in range(0, len(searcher), 11):
            vector = searcher.vector(row)
            hits = searcher.search(vector, 5, filters)
            assert [h.row for h in hits] == [h.row for h in searcher.exact(vector, 5, mask)]
    searcher.index.annoy.unload()


def test_rerank_pool_is_larger_than_k(tmp_path):
    # Asking Annoy for k alone misses true neighbours on this data; the
    # re-ranked pool must not (the reason the pool exists).
    searcher = _clustered_searcher(tmp_path, n=2000, dim=4, trees=2, spread=0.5)
    annoy_misses = site_misses = 0
    for row in range(len(searcher)):
        vector = searcher.vector(row)
        truth = {h.row for h in searcher.exact(vector, 10)}
        annoy_misses += len(truth - set(searcher.index.annoy.get_nns_by_vector(vector.tolist(), 10)))
        site_misses += len(truth - {h.row for h in searcher.search(vector, 10)})
    assert annoy_misses > 0
    assert site_misses == 0
    searcher.index.annoy.unload()


def test_compare_indexes_counts_agreement_against_per_item_exact_search(searcher, fake_index):
    """``compare_indexes`` (one batched exact pass per index) agrees with exact search item by item."""
    from indexer.evaluate import compare_indexes

    other = Searcher.load(fake_index.index_dir)
    same = compare_indexes(searcher, other, k=5)
    assert same["common_items"] == len(searcher)
    assert (same["top_k_agreement"], same["identical_lists"], same["max_abs_diff"]) == (1.0, 1.0, 0.0)

    rng = np.random.default_rng(0)
    noisy = np.array(other.embeddings) + rng.normal(0, 0.05, other.embeddings.shape).astype(np.float32)
    other.embeddings = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    overlaps, identical = [], 0
    for row in range(len(searcher)):
        mine = [h.row for h in searcher.exact(searcher.vector(row), 7) if h.row != row][:5]
        theirs = [h.row for h in other.exact(other.vector(row), 7) if h.row != row][:5]
        overlaps.append(len(set(mine) & set(theirs)) / 5)
        identical += mine == theirs
    differs = compare_indexes(searcher, other, k=5)
    assert differs["top_k_agreement"] == round(float(np.mean(overlaps)), 4) < 1.0
    assert differs["identical_lists"] == round(identical / len(searcher), 4)
    assert differs["max_abs_diff"] > 0


# ---------------------------------------------------------------- shape and colour


def _searcher_with_colours(tmp_path: Path, n: int = 3000, dim: int = 24) -> Searcher:
    """``n`` clustered unit vectors with random unit colour descriptors; real Annoy, real files."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(12, dim))
    vectors = (centres[rng.integers(0, 12, n)] + 0.4 * rng.normal(size=(n, dim))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    colours = np.sqrt(rng.dirichlet(np.full(77, 0.2), n)).astype(np.float32)  # unit, non-negative, like the real ones
    publish(
        tmp_path,
        embeddings=vectors,
        colours=colours,
        filenames=[f"{i}.jpg" for i in range(n)],
        metadata=[{"gender": "Men" if i % 5 else "Women"} for i in range(n)],
        manifest={"model": "joined"},
        trees=10,
    )
    return Searcher.load(tmp_path)


@pytest.mark.parametrize("weight", [0.2, 0.7, 1.0])
def test_joined_score_is_the_formula_and_ranks_the_results(tmp_path, weight):
    """Score = (1 - w) x shape cosine + w x colour cosine, for every hit, in descending order."""
    searcher = _searcher_with_colours(tmp_path)
    n = len(searcher)
    embeddings, colours = np.asarray(searcher.embeddings), np.asarray(searcher.colours)
    for row in range(0, n, 301):
        query, query_colour = embeddings[row], colours[(row + 1) % n]
        expected = (1 - weight) * (embeddings @ query) + weight * (colours @ query_colour)
        hits = searcher.exact(query, 8, colour=ColourQuery(query_colour, weight))
        assert [h.row for h in hits] == list(np.argsort(-expected, kind="stable")[:8])
        for hit in hits:
            assert hit.score == pytest.approx(expected[hit.row], abs=1e-5)
            assert hit.colour_similarity == pytest.approx(float(colours[hit.row] @ query_colour), abs=1e-5)
            assert hit.similarity == pytest.approx(float(embeddings[hit.row] @ query), abs=1e-5)
        # the site's path (Annoy candidates on shape, re-ranked by the joined score), filtered or not
        for filters in ({}, {"gender": "Women"}):
            mask = searcher.metadata.mask(filters) if filters else None
            site = searcher.search(query, 5, filters, colour=ColourQuery(query_colour, weight))
            assert [h.score for h in site] == sorted((h.score for h in site), reverse=True)
            if weight <= 0.2:  # the default: the shape pool holds the best joined scores
                best = searcher.exact(query, 5, mask, colour=ColourQuery(query_colour, weight))
                assert [h.row for h in site] == [h.row for h in best]
    searcher.index.annoy.unload()


def test_colour_weight_zero_or_no_colours_ranks_by_shape_alone(tmp_path):
    searcher = _searcher_with_colours(tmp_path / "with")
    query = searcher.vector(3)
    shape = searcher.search(query, 5)
    assert searcher.search(query, 5, colour=ColourQuery(searcher.colour(9), 0.0)) == shape
    assert all(h.score is None and h.colour_similarity is None for h in shape)
    row, similar = searcher.similar(searcher.ids[3], 5, colour_weight=0.5)
    assert row not in [h.row for h in similar] and all(h.score is not None for h in similar)
    searcher.index.annoy.unload()

    plain, _ = _synthetic_searcher(tmp_path / "without")  # an index written without colour descriptors
    assert plain.colours is None
    vector = plain.vector(0)
    assert plain.search(vector, 5, colour=ColourQuery(np.ones(77, np.float32), 0.5)) == plain.search(vector, 5)
    plain.index.annoy.unload()
