"""A build reads each input once: one scan of the catalogue, one parse of the manifest, one hash of each shard."""

from __future__ import annotations

import functools
import shutil
import sys
from collections import Counter

from indexer import catalogue, checkpoints, checksums, generation
from indexer.build import build_index
from indexer.colour import colour_descriptors
from indexer.images import load_for_model
from indexer.plan import key_for


def _count_calls(monkeypatch, function) -> Counter:
    """Swap ``function`` for a counting wrapper wherever an ``indexer`` module holds it; calls by first argument.

    Every module that imported the name gets the wrapper too, so a second
    call from anywhere in the build is counted, not only calls through the
    defining module.
    """
    calls: Counter = Counter()

    @functools.wraps(function)
    def counting(*args, **kwargs):
        calls[str(args[0]) if args else ""] += 1
        return function(*args, **kwargs)

    holders = [
        (module, attr)
        for name, module in list(sys.modules.items())
        if name == "indexer" or name.startswith("indexer.")
        for attr, value in list(vars(module).items())
        if value is function
    ]
    assert holders, f"{function.__qualname__} is held by no indexer module"
    for module, attr in holders:
        monkeypatch.setattr(module, attr, counting)
    return calls


def _count_reads(monkeypatch) -> tuple[Counter, Counter, Counter]:
    """Counters of catalogue scans, manifest parses and file hashes from now on."""
    return (
        _count_calls(monkeypatch, catalogue.scan),
        _count_calls(monkeypatch, generation.read_manifest),
        _count_calls(monkeypatch, checksums.sha256_file),
    )


def test_an_incremental_build_scans_once_parses_the_manifest_once_and_hashes_each_shard_once(
    tiny_settings, fake_counting_embedder, demo_catalogue, monkeypatch
):
    settings = tiny_settings.replace(checkpoint_every=2, batch_size=2)  # this build writes shards of its own
    folder, index_dir = settings.catalogue, settings.index_dir
    build_index(settings, fake_counting_embedder)  # the previous generation: 8 items
    for image_id in range(9, 13):
        shutil.copy2(demo_catalogue / f"{image_id}.jpg", folder / f"{image_id}.jpg")
    # an interrupted build already embedded 9.jpg: its shard is reused, not embedded again
    array = load_for_model(folder / "9.jpg")[None]
    stat = (folder / "9.jpg").stat()
    checkpoints.write_shard(
        checkpoints.work_dir(index_dir),
        fake_counting_embedder.embed(array),
        [["9.jpg", stat.st_size, stat.st_mtime_ns]],
        colours=colour_descriptors(array),
        model_key=key_for(fake_counting_embedder),
        name="shard-interrupted",
    )
    scans, manifests, hashes = _count_reads(monkeypatch)
    fake_counting_embedder.images = 0

    report = build_index(settings, fake_counting_embedder)

    assert (report.indexed, report.reused, report.total) == (3, 9, 12)
    assert fake_counting_embedder.images == 3
    assert sum(scans.values()) == 1, scans
    assert sum(manifests.values()) == 1, manifests
    shard_hashes = {path: count for path, count in hashes.items() if f"/{generation.WORK_DIR}/" in path}
    interrupted = {path for path in shard_hashes if "shard-interrupted" in path}
    assert len(interrupted) == 2  # its vectors and its colours
    assert len(shard_hashes) > 2  # and the shards this build wrote
    assert set(shard_hashes.values()) == {1}, shard_hashes


def test_a_build_with_nothing_to_do_scans_once_and_parses_the_manifest_once(
    tiny_settings, fake_counting_embedder, monkeypatch
):
    build_index(tiny_settings, fake_counting_embedder)
    scans, manifests, _hashes = _count_reads(monkeypatch)

    assert build_index(tiny_settings, fake_counting_embedder).up_to_date
    assert sum(scans.values()) == 1, scans
    assert sum(manifests.values()) == 1, manifests


def test_the_counting_wrapper_reaches_names_imported_elsewhere(monkeypatch):
    """Control: a module that imported ``sha256_file`` by name calls the wrapper too."""
    hashes = _count_calls(monkeypatch, checksums.sha256_file)
    checkpoints.sha256_file(__file__)
    assert hashes == Counter({__file__: 1})


def test_the_cli_build_scans_once_when_it_checks_before_loading_the_model(
    tiny_settings, fake_embedder, demo_catalogue, monkeypatch, capsys
):
    """``python -m indexer build`` decides "nothing to do" before the model loads, and hands that scan on."""
    import indexer.__main__ as cli

    build_index(tiny_settings, fake_embedder)
    shutil.copy2(demo_catalogue / "9.jpg", tiny_settings.catalogue / "9.jpg")  # work to do
    monkeypatch.setattr(cli, "_embedder", lambda settings: fake_embedder)
    monkeypatch.setattr(cli, "_weights_choice", lambda settings: fake_embedder.choice)
    previous = generation.current_generation(tiny_settings.index_dir)
    scans, parses, _ = _count_reads(monkeypatch)
    where = ["--catalogue", str(tiny_settings.catalogue), "--index-dir", str(tiny_settings.index_dir)]
    assert cli.main(["build", *where]) == 0
    assert sum(scans.values()) == 1
    assert parses[str(previous)] == 1  # the check before the model read it; the build took it from there
    assert '"indexed": 1' in capsys.readouterr().out
