"""The semdedup and target stages: their Beam steps with TestPipeline, and each stage through the
runner on a generated score stage directory (rows, saved embeddings, manifest): accounting,
reasons, the survivor named, resume, bad input, and Beam's multi-process mode."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image
from cli_errors import one_line_error
from semantic_world import (duplicate_world, embeddings_table, list_embeddings_table, scored_row, target_world, unit,
                            write_score_dir)

from beam_modes import MULTI_PROCESS
from witcurate import schemas
from witcurate.config import load_config
from witcurate.config_checks import validate
from witcurate.errors import ConfigError, InputError
from witcurate.filters.semantic_dedup import INVALID_EMBEDDING, SEMANTIC_DUPLICATE
from witcurate.filters.target import OFF_TARGET_CLUSTER
from witcurate.pipeline import embeddings as emb
from witcurate.pipeline.beam_io import KEPT, REJECTED
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.semdedup import DedupCluster, Spilled, write_vectors
from witcurate.pipeline.stages import get_stage
from witcurate.pipeline import target_set
from witcurate.pipeline.tables import read_table
from witcurate.schemas.vectors import vector_matrix

DEDUP = ["semdedup.clusters=20", "semdedup.sample=5000", "semdedup.threshold=0.9"]
TARGET = ["target.enabled=true", "target.clusters=60", "target.sample=5000"]


def _quiet(_msg: str) -> None:
    pass


def _run(name: str, overrides: list[str], score_dir, out, beam_args=(), progress=_quiet, **inputs):
    config = load_config(None, overrides)
    return run_stage(get_stage(name), config, str(out), {"in": str(score_dir), "score": str(score_dir),
                                                          **inputs}, list(beam_args), progress=progress)


def _rejects(stage_dir) -> list[dict]:
    table = read_table(str(stage_dir / "rejects"))
    return table.to_pylist() if table is not None else []


def _kept(stage_dir) -> list[str]:
    return sorted(read_table(str(stage_dir), ["uid"]).column("uid").to_pylist())


# --- Beam steps ------------------------------------------------------------------------------------

class PassNodes(emb.NodesDoFn):
    def process_nodes(self, batch):
        yield batch


@pytest.mark.parametrize("index_max", [emb.INDEX_MAX_UIDS, 0], ids=["uid-index", "by-bucket"])
def test_located_rows_read_their_vectors_and_every_row_is_routed(tmp_path, index_max):
    vectors = unit(np.random.default_rng(0).normal(size=(5, 8)))
    vectors[2, 3] = np.nan
    # "x": an embedding without a row (score rejected it); "a" saved twice: its first place counts
    uids = ["a", "b", "c", "x", "a"]
    pq.write_table(embeddings_table(uids, vectors), tmp_path / "e.parquet", row_group_size=2)
    slices = emb.embedding_slices([str(tmp_path / "e.parquet")])
    assert [s.row_group for s in slices] == [0, 1, 2]
    rows = pa.Table.from_pylist([scored_row(u, i, 0.5) for i, u in enumerate(["a", "b", "c", "d"])],
                                schemas.SCORED)                         # "d": no embedding

    def nodes(batch):
        return [(u, v.shape, bool(np.allclose(v, vectors[uids.index(u)], atol=1e-3)), batch.name)
                for u, v in zip(batch.uids, batch.vectors)]

    with TestPipeline() as p:
        outs = (p | beam.Create([rows.slice(0, 2), rows.slice(2)])
                  | emb.LocateEmbeddings(slices, buckets=3, index_max=index_max))
        read = outs[emb.LOCATED] | "Judge" >> beam.ParDo(PassNodes(slices, 8)).with_outputs(REJECTED, main=emb.NODES)
        assert_that(read[emb.NODES] | "NodeUids" >> beam.FlatMap(nodes),
                    equal_to([("a", (8,), True, "000000"), ("b", (8,), True, "000000")]), label="nodes")
        assert_that(read[REJECTED] | "RejectReasons" >> beam.FlatMap(
            lambda t: [(r["uid"], r["reason"], r["detail"]) for r in t.to_pylist()]),
            equal_to([("c", INVALID_EMBEDDING, "embedding holds NaN or infinite values")]), label="rejects")
        assert_that(outs[emb.MISSING], equal_to([{"count": 1, "examples": ["d"]}]), label="missing")
        assert_that(outs[emb.PIECES] | "Places" >> beam.FlatMap(
            lambda piece: [(u, piece[0], int(at)) for u, at in zip(piece[1][0].column("uid").to_pylist(), piece[1][1])]),
            equal_to([("a", 0, 0), ("b", 0, 1), ("c", 1, 0)]), label="places")


def test_the_uid_index_finds_first_places_and_tells_colliding_hashes_apart():
    from witcurate.pipeline.embedding_index import BuildIndex
    combine = BuildIndex()

    def part(index, uids, keys):
        n = len(uids)
        return (np.array(keys, np.uint64), pa.array(uids), np.full(n, index, np.int32), np.arange(n, dtype=np.int32))

    # "a" saved in slices 0 and 1; "b" and "c" share a hash; the parts arrive in any order
    acc = combine.merge_accumulators([combine.add_input(combine.create_accumulator(), part(1, ["a", "c"], [5, 7])),
                                      combine.add_input(combine.create_accumulator(), part(0, ["a", "b"], [5, 7]))])
    index = combine.extract_output(acc)
    slices, rows = index.locate(pa.array(["c", "a", "b", "z", "y"]), np.array([7, 5, 7, 9, 1], np.uint64))
    assert slices.tolist() == [1, 0, 0, -1, -1] and rows.tolist() == [1, 0, 1, -1, -1]
    empty = combine.extract_output(combine.create_accumulator())
    assert [a.tolist() for a in empty.locate(pa.array(["a"]), np.array([5], np.uint64))] == [[-1], [-1]]


def test_usable_rows_reads_the_bits_as_numpy_reads_the_values():
    # every float16 value, alone in a row and beside a normal value
    every = np.arange(65536, dtype=np.uint16).view(np.float16)
    for other in (0.0, 0.5):
        rows = np.stack([every, np.full(65536, other, np.float16)], axis=1)
        with np.errstate(invalid="ignore"):
            expected = np.isfinite(rows).all(axis=1) & (rows != 0).any(axis=1)
        assert np.array_equal(emb.usable_rows(rows), expected)
    assert emb.usable_rows(np.zeros((0, 4), np.float16)).shape == (0,)


def _batch(uids, scores, vectors) -> emb.NodeBatch:
    rows = pa.Table.from_pylist([scored_row(u, i, s) for i, (u, s) in enumerate(zip(uids, scores))],
                                schemas.SCORED)
    return emb.NodeBatch(rows, np.asarray(vectors, np.float16))


def test_the_fit_sample_is_the_smallest_keys_however_the_batches_come():
    # The k-means sample must not depend on batching or bundle order: any split of the nodes,
    # combined in any order, gives the n vectors with the smallest uid hashes, in key order.
    from witcurate.pipeline.embedding_fit import SmallestKeys
    rng = np.random.default_rng(3)
    keys = rng.permutation(np.arange(1000, dtype=np.uint64) * 7919)
    vectors = rng.normal(size=(1000, 4)).astype(np.float16)
    order = np.argsort(keys)[:64]
    combine = SmallestKeys(64)
    cuts = np.sort(rng.choice(np.arange(1, 1000), 30, replace=False))
    accs = []
    for piece in np.split(rng.permutation(1000), cuts):
        acc = combine.create_accumulator()
        for part in np.array_split(piece, 3):
            acc = combine.add_input(acc, (keys[part], vectors[part]))
        accs.append(acc)
    merged = combine.merge_accumulators([combine.merge_accumulators(accs[:10]), *accs[10:]])
    got_keys, got_vectors = combine.extract_output(merged)
    assert np.array_equal(got_keys, keys[order]) and np.array_equal(got_vectors, vectors[order])
    assert combine.extract_output(combine.create_accumulator()) is None


def test_the_combine_fits_on_the_sample_it_reads_and_counts_every_row(tmp_path):
    # Only the located rows' keys and places pass through the combine; its output is the model
    # fitted on the smallest-key sample's vectors, read from their slices (an unusable one left
    # out), with the total (for splitting large clusters) counted over every located row.
    from witcurate.pipeline.embedding_fit import FitOnSample, KMeansSettings, fit_model
    rng = np.random.default_rng(4)
    keys = rng.permutation(np.arange(600, dtype=np.uint64) * 104729)
    vectors = unit(rng.normal(size=(600, 8))).astype(np.float16)
    bad = int(np.argsort(keys)[3])
    vectors[bad] = np.nan
    pq.write_table(embeddings_table([f"u{i}" for i in range(600)], vectors), tmp_path / "e.parquet",
                   row_group_size=150)
    slices = emb.embedding_slices([str(tmp_path / "e.parquet")])
    fit = FitOnSample(slices, 8, KMeansSettings(clusters=4, sample=200, max_size=100, seed=0, niter=5))
    accs = []
    for part in np.array_split(rng.permutation(600), 7):
        acc = fit.create_accumulator()
        for index in range(len(slices)):
            mine = part[part // 150 == index]
            if len(mine):
                acc = fit.add_input(acc, (index, (None, (mine % 150).astype(np.int32), keys[mine])))
        accs.append(acc)
    total, pieces = fit.merge_accumulators(iter(accs))
    assert total == 600
    model = fit.extract_output((total, pieces))
    order = [i for i in np.argsort(keys)[:200].tolist() if i != bad]
    expected = fit_model(vectors[order], 600, 4, 100, 0, 5)
    assert model.sample_size == 199 and model.children            # 600 / 4 clusters > 100: split
    assert np.array_equal(model.centroids, expected.centroids)
    assert model.children.keys() == expected.children.keys()
    assert fit.extract_output(fit.create_accumulator()).k == 0    # an empty pool: an empty model


def test_dedup_cluster_keeps_the_best_scored_and_names_it(tmp_path):
    # Each piece's vectors wait in a spill file, at its rows' range there.
    x = unit(np.array([[1.0, 0.0, 0.0], [1.0, 0.02, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    def spill(name, vectors, *row_tables):          # a record batch of rows per group
        write_vectors(str(tmp_path / f"{name}.f16"), vectors)
        with pa.ipc.new_file(str(tmp_path / f"{name}.arrow"), schemas.SCORED) as writer:
            for table in row_tables:
                writer.write_table(table)
        return str(tmp_path / name)

    a = spill("a", x[[3, 0, 2]], _batch(["u3"], [0.9], x[[3]]).rows, _batch(["u0", "u2"], [0.3, 0.1], x[[0, 2]]).rows)
    b = spill("b", x[[1]], _batch(["u1"], [0.7], x[[1]]).rows)
    pieces = [Spilled(a, 1, 1, 3, 3), Spilled(b, 0, 0, 1, 3)]
    with TestPipeline() as p:
        outs = (p | beam.Create([((5, -1), pieces)])
                  | beam.ParDo(DedupCluster(0.95, 1000)).with_outputs(REJECTED, main=KEPT))
        assert_that(outs[KEPT] | "KeptUids" >> beam.FlatMap(lambda t: t.column("uid").to_pylist()),
                    equal_to(["u1", "u2"]), label="kept")
        assert_that(outs[REJECTED] | "Survivors" >> beam.FlatMap(lambda t: [
            (r["uid"], r["reason"], json.loads(r["record"])["survivor_uid"],
             r["detail"].startswith("semantic duplicate of u1: cosine 0.99") and "cluster 5" in r["detail"])
            for r in t.to_pylist()]),
            equal_to([("u0", SEMANTIC_DUPLICATE, "u1", True)]), label="rejects")


# --- semdedup through the runner ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def dup_world():
    return duplicate_world(n_clean=1500, groups=44, dim=64, topics=20, seed=1)


@pytest.fixture(scope="module")
def dup_score(dup_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("dup")
    return write_score_dir(root / "score", dup_world.uids, dup_world.vectors, dup_world.scores,
                           extra_embeddings=40)


def test_semdedup_stage_finds_the_planted_groups(dup_world, dup_score, tmp_path):
    m = _run("semdedup", DEDUP, dup_score, tmp_path / "semdedup")
    counts = m["counts"]
    assert counts["in"] == len(dup_world.uids) == counts["kept"] + counts["rejected"]
    assert set(counts["reasons"]) == {SEMANTIC_DUPLICATE}
    assert m["semdedup"]["clusters"] == 20 and m["semdedup"]["duplicate_groups"] >= 40
    rejects = _rejects(tmp_path / "semdedup")
    kept = set(_kept(tmp_path / "semdedup"))
    removed = {r["uid"] for r in rejects}
    flags = np.array([u in removed for u in dup_world.uids])
    recall = flags[~dup_world.clean()].sum() / dup_world.should_remove()
    assert recall >= 0.9 and flags[dup_world.clean()].mean() <= 0.02
    score_of = dict(zip(dup_world.uids, dup_world.scores.tolist()))
    for r in rejects:                       # every survivor named is kept and scored at least as well
        survivor = json.loads(r["record"])["survivor_uid"]
        assert survivor in kept and survivor in r["detail"]
        assert score_of[survivor] >= score_of[r["uid"]]
    assert m["semdedup"]["duplicate_groups"] == len({json.loads(r["record"])["survivor_uid"] for r in rejects})
    again = _run("semdedup", DEDUP, dup_score, tmp_path / "semdedup")
    assert again.get("skipped") is True


def test_a_killed_attempt_s_spill_is_cleared_and_a_landed_stage_leaves_none(dup_world, dup_score, tmp_path):
    # A killed attempt left a spill file under the name this run's first slice writes, holding
    # other vectors: the rerun must not read it, and once the stage lands no spill is left.
    clean = _run("semdedup", DEDUP, dup_score, tmp_path / "clean" / "semdedup")
    spill = tmp_path / "killed" / ".work-semdedup" / "spill"
    spill.mkdir(parents=True)
    (spill / "000000.f16").write_bytes(np.ones((4000, 64), np.float16).tobytes())
    (spill / "000000.arrow").write_bytes(b"not the rows")
    (spill / "stale-attempt.f16").write_bytes(b"\0" * 128)
    again = _run("semdedup", DEDUP, dup_score, tmp_path / "killed" / "semdedup")
    assert again["counts"] == clean["counts"]
    assert _kept(tmp_path / "killed" / "semdedup") == _kept(tmp_path / "clean" / "semdedup")
    assert not (tmp_path / "killed" / ".work-semdedup").exists()
    assert not list((tmp_path / "clean").glob(".work-*"))


def test_semdedup_splits_clusters_too_large_for_one_worker(dup_world, dup_score, tmp_path):
    m = _run("semdedup", ["semdedup.clusters=2", "semdedup.sample=5000", "semdedup.threshold=0.9",
                          "semdedup.max_cluster_size=400"], dup_score, tmp_path / "semdedup")
    assert m["semdedup"]["split_clusters"] == 2 and m["semdedup"]["child_clusters"] > 4
    removed = {r["uid"] for r in _rejects(tmp_path / "semdedup")}
    flags = np.array([u in removed for u in dup_world.uids])
    assert flags[~dup_world.clean()].sum() / dup_world.should_remove() >= 0.9
    labels = {r["detail"].split("cluster ")[1].split(" ")[0] for r in _rejects(tmp_path / "semdedup")}
    assert labels and all("." in label for label in labels)        # "cluster.child": split ones


def test_a_score_directory_with_list_embeddings_gives_the_same_result(dup_world, dup_score, tmp_path):
    """Score directories written before the embeddings became float16 bytes hold lists of float16;
    the stage reads them to the same vectors, so the same pairs are kept and rejected."""
    old = tmp_path / "score"
    shutil.copytree(dup_score, old)
    for path in sorted((old / "embeddings").glob("*.parquet")):
        table = pq.read_table(path)
        vectors, _ = vector_matrix(table.column("image_embedding"), 64)
        pq.write_table(list_embeddings_table(table.column("uid").to_pylist(), vectors), path)
    assert pa.types.is_list(pq.read_schema(old / "embeddings" / "part-00000.parquet").field("image_embedding").type)
    new = _run("semdedup", DEDUP, dup_score, tmp_path / "new")
    before = _run("semdedup", DEDUP, old, tmp_path / "old")
    assert before["counts"] == new["counts"] and new["counts"]["rejected"] > 0
    assert _kept(tmp_path / "old") == _kept(tmp_path / "new")
    assert sorted((r["uid"], r["detail"]) for r in _rejects(tmp_path / "old")) == sorted(
        (r["uid"], r["detail"]) for r in _rejects(tmp_path / "new"))


def test_a_target_set_reads_the_same_from_npy_parquet_lists_and_a_score_directory(tgt, tmp_path):
    world, score, targets = tgt
    vectors = np.load(targets).astype(np.float16)
    uids = [f"t{i}" for i in range(len(vectors))]
    np.save(tmp_path / "t.npy", vectors)
    pq.write_table(pa.table({"embedding": pa.array(vectors.astype(np.float32).tolist(), pa.list_(pa.float32()))}),
                   tmp_path / "lists.parquet", row_group_size=500)
    (tmp_path / "dir" / "embeddings").mkdir(parents=True)
    pq.write_table(embeddings_table(uids, vectors), tmp_path / "dir" / "embeddings" / "part-00000.parquet")
    reads = {name: np.concatenate(list(target_set.target_chunks(str(tmp_path / name))))
             for name in ("t.npy", "lists.parquet", "dir")}
    assert all(r.shape == (len(vectors), 64) for r in reads.values())
    assert np.array_equal(reads["t.npy"], reads["lists.parquet"]) and np.array_equal(reads["t.npy"], reads["dir"])
    assert target_set.check_targets(str(tmp_path / "dir"), 64) == {"rows": len(vectors), "usable": len(vectors), "dim": 64}


def test_switched_off_everything_passes_and_is_counted(tmp_path):
    world = duplicate_world(n_clean=50, groups=3, dim=8, seed=2)
    score = write_score_dir(tmp_path / "score", world.uids, world.vectors)
    for path in (score / "embeddings").iterdir():        # not even read when switched off
        path.unlink()
    for name, off in (("semdedup", "semdedup.enabled=false"), ("target", "target.enabled=false")):
        m = _run(name, [off], score, tmp_path / name)
        assert m["counts"] == {"in": len(world.uids), "kept": len(world.uids), "rejected": 0, "reasons": {}}
        assert m[name] == {"enabled": False}


def test_missing_embeddings_stop_with_the_score_stage_named(tmp_path, capsys):
    world = duplicate_world(n_clean=60, groups=2, dim=8, seed=3)
    score = write_score_dir(tmp_path / "score", world.uids, world.vectors, parts=2)
    (score / "embeddings" / "part-00001.parquet").unlink()
    with pytest.raises(InputError, match=r"kept rows have no image embedding in the score stage") as e:
        _run("semdedup", ["semdedup.clusters=4", "semdedup.sample=100"], score, tmp_path / "semdedup")
    assert "rerun the score stage" in e.value.hint
    assert not (tmp_path / "semdedup").exists()
    for path in (score / "embeddings").iterdir():
        path.unlink()
    err = one_line_error(capsys, ["semdedup", "--in", str(score), "--score", str(score), "--out", str(tmp_path / "s2")],
                         "error: no saved embeddings")
    assert "score" in err


def test_nan_embeddings_are_rejects_and_a_small_pool_clamps_the_clusters(tmp_path):
    world = duplicate_world(n_clean=40, groups=2, dim=8, seed=4)
    vectors = world.vectors.copy()
    vectors[[3, 7]] = np.nan
    score = write_score_dir(tmp_path / "score", world.uids, vectors)
    notes = []
    m = _run("semdedup", ["semdedup.clusters=500", "semdedup.sample=1000", "semdedup.threshold=0.9"],
             score, tmp_path / "semdedup", progress=notes.append)
    assert m["counts"]["reasons"][INVALID_EMBEDDING] == 2
    assert m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"]
    assert m["semdedup"]["clusters"] == len(world.uids) - 2
    assert any("semdedup.clusters is 500 but the pool holds" in n for n in notes)


# --- target through the runner -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tgt(tmp_path_factory):
    root = tmp_path_factory.mktemp("tgt")
    world = target_world(seed=1)
    np.save(root / "targets.npy", world.targets)
    return world, write_score_dir(root / "score", world.uids, world.pool), root / "targets.npy"


def test_target_stage_drops_the_off_target_clusters(tgt, tmp_path):
    world, score, targets = tgt
    m = _run("target", TARGET + [f"target.embeddings={targets}"], score, tmp_path / "target")
    assert m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"] == len(world.uids)
    assert set(m["counts"]["reasons"]) == {OFF_TARGET_CLUSTER}
    assert m["target"]["target_embeddings"] == {"rows": 1500, "usable": 1500, "dim": 64}
    removed = {r["uid"] for r in _rejects(tmp_path / "target")}
    flags = np.array([u in removed for u in world.uids])
    assert flags[world.off_target].mean() >= 0.8 and flags[~world.off_target].mean() <= 0.05
    clusters = json.loads((tmp_path / "target" / "clusters.json").read_text())
    assert len(clusters["clusters"]) == 60 and m["target"]["clusters_kept"] == sum(
        c["kept"] for c in clusters["clusters"])
    detail = _rejects(tmp_path / "target")[0]["detail"]
    assert detail.startswith("cluster ") and "distance" in detail and "to the target set" in detail
    # a keep fraction keeps that share of the clusters, nearest first
    half = _run("target", TARGET + [f"target.embeddings={targets}", "target.keep_fraction=0.5"],
                score, tmp_path / "half")
    assert half["target"]["clusters_kept"] == 30


def test_a_bad_target_set_is_a_one_line_error(tgt, tmp_path, capsys):
    _, score, _ = tgt
    np.save(tmp_path / "empty.npy", np.zeros((0, 64), np.float32))
    np.save(tmp_path / "narrow.npy", np.ones((5, 32), np.float32))
    np.save(tmp_path / "nan.npy", np.full((5, 64), np.nan, np.float32))
    for name, needle in (("empty", "is empty"), ("narrow", "have size 32, the pool's (score stage) have size 64"),
                         ("nan", "none of the 5 target embeddings"), ("absent", "not found")):
        argv = ["target", "--in", str(score), "--score", str(score), "--out", str(tmp_path / f"t-{name}"),
                "--set", "target.enabled=true", "--target-embeddings", str(tmp_path / f"{name}.npy")]
        one_line_error(capsys, argv, needle)


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_target_images_are_embedded_with_the_score_model(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes(_png(i))
    with tarfile.open(images / "trusted-0.tar", "w") as tar:
        for i in range(3, 8):
            data = _png(i)
            info = tarfile.TarInfo(f"{i:05d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (images / "broken.jpg").write_bytes(b"not an image")
    world = duplicate_world(n_clean=30, groups=1, dim=128, seed=5)         # witcurate-tiny's size
    score = write_score_dir(tmp_path / "score", world.uids, world.vectors)
    manifest = json.loads((score / "_SUCCESS.json").read_text())
    (score / "_SUCCESS.json").write_text(json.dumps({**manifest, "model": "witcurate-tiny:random"}))
    overrides = ["target.enabled=true", f"target.images={images}", "target.clusters=4", "target.sample=100",
                 "score.model=witcurate-tiny", "score.pretrained=''"]
    m = _run("target", overrides, score, tmp_path / "target")
    assert m["target"]["embedded"] == {"images": 8, "unreadable": 1}
    assert np.load(tmp_path / "target" / "target_embeddings.npy").shape == (8, 128)
    assert m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"]
    other = overrides[:-1] + ["score.pretrained=openai"]          # not the model the pool was scored with
    with pytest.raises(InputError, match="but the score stage used witcurate-tiny:random"):
        _run("target", other, score, tmp_path / "target2")


# --- Beam's multi-process mode ---------------------------------------------------------------------

def test_multi_process_runs_equal_in_process(dup_score, tgt, tmp_path):
    _, tscore, targets = tgt
    for name, overrides, score in (("semdedup", DEDUP, dup_score),
                                   ("target", TARGET + [f"target.embeddings={targets}"], tscore)):
        _run(name, overrides, score, tmp_path / f"{name}-1")
        _run(name, overrides, score, tmp_path / f"{name}-2", beam_args=MULTI_PROCESS)
        one, two = tmp_path / f"{name}-1", tmp_path / f"{name}-2"
        assert _kept(one) == _kept(two)
        assert sorted((r["uid"], r["reason"], r["detail"]) for r in _rejects(one)) == \
            sorted((r["uid"], r["reason"], r["detail"]) for r in _rejects(two))


# --- configuration ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override,needle", [
    ("semdedup.threshold=0", "semdedup.threshold must be a cosine in (0, 1], got 0"),
    ("semdedup.threshold=1.5", "semdedup.threshold must be a cosine in (0, 1], got 1.5"),
    ("semdedup.threshold=.nan", "semdedup.threshold must be a cosine in (0, 1]"),
    ("semdedup.sample=10", "semdedup.sample (10) is below semdedup.clusters (1000)"),
    ("target.sample=999", "target.sample (999) is below target.clusters (1000)"),
    ("semdedup.clusters=0", "semdedup.clusters must be at least 1"),
    ("semdedup.max_cluster_size=1", "semdedup.max_cluster_size must be at least 2"),
    ("target.keep_fraction=0", "target.keep_fraction must be in (0, 1], got 0"),
    ("target.keep_fraction=1.01", "target.keep_fraction must be in (0, 1]"),
    ("target.fit=all", "target.fit must be one of pool, input, got 'all'"),
])
def test_config_values_are_range_checked_at_load(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert needle in e.value.message


def test_the_target_filter_needs_one_target_set_when_it_runs():
    config = load_config(None, ["target.enabled=true"])          # fine until the stage runs
    with pytest.raises(ConfigError, match="no target set is given"):
        validate(config, stages=("target",))
    with pytest.raises(ConfigError, match="set one of embeddings and images"):
        load_config(None, ["target.embeddings=t.npy", "target.images=imgs/"])
    assert load_config("configs/demo.yaml").run.stages.index("semdedup") == \
        load_config("configs/demo.yaml").run.stages.index("score") + 1


def test_cap_reads_the_last_embedding_step_the_run_has():
    def cap_input(stages):
        config = load_config(None, [f"run.stages=[{','.join(stages)}]"])
        return get_stage("cap").default_inputs(config, "OUT")["in"]
    assert cap_input(["score", "semdedup", "target", "cap"]) == "OUT/target"
    assert cap_input(["score", "semdedup", "cap"]) == "OUT/semdedup"
    assert cap_input(["score", "cap"]) == "OUT/score"
    assert get_stage("target").default_inputs(load_config(None, ["run.stages=[score,target]"]), "OUT")["in"] \
        == "OUT/score"


def test_the_clusters_are_fitted_on_the_pool_where_the_few_off_target_pairs_left_have_their_own(tgt, tmp_path):
    """After the CLIP score, few off-target pairs reach the target stage. Fitted on those rows
    alone, their kind has no cluster of its own and they join the on-target clusters nearest to
    them; fitted on the pool (every embedding the score stage saved), it has, and they go."""
    world, score, targets = tgt
    off = np.flatnonzero(world.off_target)
    left = set(np.random.default_rng(2).choice(off, 12, replace=False).tolist())
    rows = [i for i in range(len(world.uids)) if not world.off_target[i] or i in left]
    stage_in = tmp_path / "in"
    stage_in.mkdir()
    pq.write_table(pa.Table.from_pylist([scored_row(world.uids[i], i, 0.5) for i in rows], schemas.SCORED),
                   stage_in / "part-00000.parquet")
    caught, clean_removed = {}, {}
    for fit in ("pool", "input"):
        m = _run("target", TARGET + [f"target.embeddings={targets}", f"target.fit={fit}"], score,
                 tmp_path / fit, **{"in": str(stage_in)})
        assert m["counts"]["in"] == len(rows) == m["counts"]["kept"] + m["counts"]["rejected"]
        assert m["target"]["fit"] == fit
        removed = {r["uid"] for r in _rejects(tmp_path / fit)}
        caught[fit] = np.mean([world.uids[i] in removed for i in left])
        clean_removed[fit] = np.mean([world.uids[i] in removed for i in rows if i not in left])
    assert caught["pool"] >= 0.9 and clean_removed["pool"] <= 0.05
    assert caught["input"] <= 0.5
