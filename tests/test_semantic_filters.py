"""Semantic dedup and the target-distribution filter on plain numpy values: planted duplicate
groups found exactly, the survivor rule, off-target clusters, and the ground-truth targets on
synthetic embeddings with planted structure (tests/semantic_world.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from semantic_world import duplicate_world, target_world, unit

from witcurate.filters import kmeans
from witcurate.filters import semantic_dedup as sd
from witcurate.filters import target as tg
from witcurate.filters.base import Drop


def _brute_groups(x: np.ndarray, threshold: float) -> list[set[int]]:
    """Connected groups by a plain all-pairs matrix and a flood fill: the reference."""
    adj = (x @ x.T) >= threshold
    seen, groups = set(), []
    for start in range(len(x)):
        if start in seen:
            continue
        group, todo = set(), [start]
        while todo:
            i = todo.pop()
            if i not in group:
                group.add(i)
                todo.extend(np.flatnonzero(adj[i]).tolist())
        seen |= group
        groups.append(group)
    return groups


def _as_groups(labels: np.ndarray) -> list[set[int]]:
    out: dict[int, set[int]] = {}
    for i, label in enumerate(labels.tolist()):
        out.setdefault(label, set()).add(i)
    return sorted(out.values(), key=min)


# --- duplicate groups ----------------------------------------------------------------------------

def test_planted_groups_are_found_exactly():
    rng = np.random.default_rng(3)
    scenes = unit(rng.normal(size=(4, 32)))
    members = [unit(scenes[g] + 0.05 * rng.normal(size=(size, 32)) / np.sqrt(32))
               for g, size in enumerate([1, 2, 3, 5])]
    x = np.concatenate(members)
    labels = sd.duplicate_groups(x, 0.95)
    assert _as_groups(labels) == [{0}, {1, 2}, {3, 4, 5}, {6, 7, 8, 9, 10}]
    assert labels.tolist() == [0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 6]      # each root its smallest member


def test_groups_across_blocks_equal_the_groups_of_the_whole_matrix():
    # 4,700 vectors: rows in 10 blocks, columns past the first 4,096; duplicates planted far apart
    rng = np.random.default_rng(5)
    x = unit(rng.normal(size=(4700, 16))).astype(np.float32)
    for a, b in [(0, 4699), (10, 511), (511, 512), (600, 4100), (4100, 4101), (3000, 600)]:
        x[b] = unit(x[a] + 0.01 * rng.normal(size=16))
    parent = list(range(len(x)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i
    for i, j in zip(*np.nonzero(np.triu(x @ x.T >= 0.95, k=1))):
        parent[max(root(i), root(j))] = min(root(i), root(j))
    expected = [root(i) for i in range(len(x))]
    assert sd.duplicate_groups(x, 0.95).tolist() == expected
    assert len(set(expected)) <= len(x) - 5                # the planted pairs joined (and any by chance)


def test_groups_are_connected_through_members():
    # a ~ b and b ~ c, while a and c are further apart than the threshold: one group
    a = np.array([1.0, 0.0, 0.0])
    b = unit(np.array([1.0, 0.3, 0.0]))
    c = unit(np.array([1.0, 0.6, 0.0]))
    x = np.stack([a, b, c]).astype(np.float32)
    assert a @ c < 0.95 <= min(a @ b, b @ c)
    assert sd.duplicate_groups(x, 0.95).tolist() == [0, 0, 0]


def test_threshold_is_inclusive():
    # cos = 0.5 exactly in float32: [1, 0] . [0.5, sqrt(0.75)]
    x = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)]], dtype=np.float32)
    assert sd.duplicate_groups(x, 0.5).tolist() == [0, 0]
    assert sd.duplicate_groups(x, float(np.nextafter(np.float32(0.5), np.float32(1)))).tolist() == [0, 1]


def test_blocked_search_equals_all_pairs(monkeypatch):
    monkeypatch.setattr(sd, "ROW_BLOCK", 7)
    monkeypatch.setattr(sd, "COLUMN_BLOCK", 11)
    world = duplicate_world(n_clean=150, groups=12, dim=16, topics=5, seed=4)
    for threshold in (0.8, 0.9, 0.95):
        assert _as_groups(sd.duplicate_groups(world.vectors, threshold)) == \
            _brute_groups(world.vectors, threshold)


# --- survivors -------------------------------------------------------------------------------------

def test_survivor_is_the_best_clip_score_then_the_smallest_uid():
    assert sd.survivor_order(["c", "a", "b"], [0.3, 0.5, 0.5]) == [1, 2, 0]
    assert sd.survivor_order(["a", "b", "c"], [float("nan"), None, 0.1]) == [2, 0, 1]


def test_resolve_names_the_survivor_and_the_cosine_to_it():
    x = unit(np.array([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0], [1.0, 0.1]]))
    out = sd.resolve_duplicates(["u0", "u1", "u2", "u3"], [0.2, 0.9, 0.5, 0.1], x, 0.99)
    assert set(out) == {0, 3}
    assert all(survivor == 1 for survivor, _ in out.values())
    assert out[0][1] == pytest.approx(float(x[0] @ x[1]), abs=1e-6)
    drop = sd.duplicate_drop("u1", out[0][1], 0.99, "4.1")
    assert isinstance(drop, Drop) and drop.reason == sd.SEMANTIC_DUPLICATE
    assert "u1" in drop.detail and "cluster 4.1" in drop.detail and "joined through" not in drop.detail
    assert "joined through" in sd.duplicate_drop("u1", 0.9, 0.95, "4").detail


def test_nothing_to_resolve_without_duplicates():
    x = np.eye(4, dtype=np.float32)
    assert sd.resolve_duplicates(list("abcd"), [0.5] * 4, x, 0.9) == {}


@pytest.mark.parametrize("vector,dim,problem", [
    (None, 4, "no image embedding"),
    (np.array([1.0, 0.0], np.float16), 4, "size 2, the pool's is 4"),
    (np.array([1.0, np.nan, 0, 0], np.float16), 4, "NaN"),
    (np.array([1.0, np.inf, 0, 0], np.float16), 4, "NaN or infinite"),
    (np.zeros(4, np.float16), 4, "all zeros"),
])
def test_unusable_embeddings_say_why(vector, dim, problem):
    assert problem in sd.embedding_problem(vector, dim)
    assert sd.embedding_problem(np.array([0.5, 0.5, 0.5, 0.5], np.float16), 4) is None


# --- k-means ---------------------------------------------------------------------------------------

def test_kmeans_clamps_to_the_vectors_and_assigns_to_the_nearest():
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(3, 16)))
    x = np.concatenate([unit(c + 0.1 * rng.normal(size=(40, 16))) for c in centres])
    fitted = kmeans.fit_kmeans(x, 3, seed=0)
    assert fitted.shape == (3, 16) and np.allclose(np.linalg.norm(fitted, axis=1), 1, atol=1e-5)
    index, cosine = kmeans.nearest(x, fitted)
    assert len(set(index[:40])) == len(set(index[40:80])) == len(set(index[80:])) == 1
    assert len(set(index.tolist())) == 3 and (cosine > 0.8).all()
    assert kmeans.fit_kmeans(x[:5], 50).shape == (5, 16)          # more clusters than vectors
    assert np.array_equal(kmeans.fit_kmeans(x, 3, seed=0), fitted)  # the same seed, the same fit


def test_a_vectors_cluster_does_not_depend_on_its_batch():
    # Vectors crowded around one direction (as a barely trained model's are): the float32 product
    # of a 3,000-vector block and of a 7-vector block round differently, and nearly every vector
    # has two centroids within that rounding. Beam hands a worker whatever batches it likes, so
    # each vector must land in the same cluster, with the same cosine, in any of them.
    rng = np.random.default_rng(0)
    base = rng.normal(size=512)
    x = unit(base + 1e-3 * rng.normal(size=(3000, 512))).astype(np.float32)
    centroids = unit(base + 1e-3 * rng.normal(size=(40, 512))).astype(np.float32)
    whole, whole_cosine = kmeans.nearest(x, centroids)
    assert len(set(whole.tolist())) > 10
    for size in (1, 7, 100):
        parts = [kmeans.nearest(x[i:i + size], centroids) for i in range(0, len(x), size)]
        assert np.array_equal(np.concatenate([p[0] for p in parts]), whole), size
        assert np.array_equal(np.concatenate([p[1] for p in parts]), whole_cosine), size


def test_sample_key_is_stable():
    assert kmeans.sample_key("abc") == kmeans.sample_key("abc") != kmeans.sample_key("abd")
    assert kmeans.sample_key("abc") == 0xd8bb14d833d59559          # blake2b-64 of the uid: never changes


def test_sample_keys_of_many_uids_are_each_uid_s_sample_key():
    uids = ["abc", "", "é-ünïcode", "x" * 300] + [f"u{i}" for i in range(1000)]
    keys = kmeans.sample_keys(uids)
    assert keys.dtype == np.uint64 and keys.tolist() == [kmeans.sample_key(u) for u in uids]
    assert keys[0] == 0xd8bb14d833d59559 and keys.max() > 2 ** 63       # the top bit survives
    assert kmeans.sample_keys([]).shape == (0,)


def test_a_cluster_too_large_for_one_worker_is_split():
    rng = np.random.default_rng(1)
    big, small = unit(rng.normal(size=(2, 16)))
    sample = np.concatenate([unit(big + 0.5 * rng.normal(size=(900, 16))),
                             unit(small + 0.1 * rng.normal(size=(100, 16)))])
    model = kmeans.ClusterModel(np.stack([big, small]), {}, len(sample))
    split = kmeans.split_large_clusters(model, sample, total=100_000, max_size=20_000)
    # the big cluster is expected to hold 90,000: children of ~10,000 (half the limit)
    assert list(split.children) == [0] and len(split.children[0]) == 9
    top, child, _ = split.assign(sample)
    assert set(child[top == 0].tolist()) <= set(range(9)) and (child[top == 1] == -1).all()
    sizes = np.bincount(child[top == 0]) * 100_000 / len(sample)
    assert sizes.max() <= 20_000
    assert kmeans.split_large_clusters(model, sample, total=10_000, max_size=20_000).children == {}


# --- ground truth on planted duplicates ------------------------------------------------------------

def _semdedup(vectors, uids, scores, clusters: int, threshold: float) -> np.ndarray:
    centroids = kmeans.fit_kmeans(vectors, clusters, seed=0)
    top, _ = kmeans.nearest(vectors, centroids)
    removed = np.zeros(len(vectors), dtype=bool)
    for c in range(len(centroids)):
        idx = np.flatnonzero(top == c)
        losers = sd.resolve_duplicates([uids[i] for i in idx], scores[idx].tolist(), vectors[idx], threshold)
        removed[idx[list(losers)]] = True
    return removed


def test_planted_duplicates_recall_and_clean_loss():
    world = duplicate_world(seed=0)
    removed = _semdedup(world.vectors, world.uids, world.scores, clusters=30, threshold=0.9)
    recall = removed[~world.clean()].sum() / world.should_remove()
    clean_removed = removed[world.clean()].mean()
    assert recall >= 0.9 and clean_removed <= 0.02, (recall, clean_removed)
    # one survivor per planted group, and it is the group's best-scored member
    for g in np.unique(world.group[world.group >= 0]):
        members = np.flatnonzero(world.group == g)
        kept = members[~removed[members]]
        assert len(kept) >= 1
        assert world.scores[kept].max() == world.scores[members].max()


def test_a_lower_threshold_removes_the_siblings_too():
    """The test can fail: at 0.8 the clean near-pairs (cosine ~0.85) go as well."""
    world = duplicate_world(seed=0)
    removed = _semdedup(world.vectors, world.uids, world.scores, clusters=30, threshold=0.8)
    assert removed[world.clean()].mean() > 0.02


# --- target clusters -------------------------------------------------------------------------------

def test_datacomp_rule_keeps_the_clusters_targets_fall_nearest_to():
    centroids = np.eye(4, dtype=np.float32)
    targets = unit(np.array([[1.0, 0.1, 0, 0], [0.9, 0, 0.1, 0], [0, 0.1, 1.0, 0]]))
    stats = tg.target_stats(targets, centroids)
    assert stats.votes.tolist() == [2, 0, 1, 0] and stats.targets == 3
    choice = tg.choose_clusters(stats, None)
    assert choice.kept == (True, False, True, False)
    assert tg.on_target(0, choice) is True
    drop = tg.on_target(3, choice)
    assert isinstance(drop, Drop) and drop.reason == tg.OFF_TARGET_CLUSTER
    assert drop.detail.startswith("cluster 3 of 4: distance 1.0000 to the target set")


def test_keep_fraction_keeps_the_nearest_clusters():
    centroids = unit(np.array([[1.0, 0, 0], [0.8, 0.6, 0], [0, 1.0, 0], [0, 0, 1.0]]))
    stats = tg.target_stats(np.array([[1.0, 0, 0]], dtype=np.float32), centroids)
    assert tg.choose_clusters(stats, 0.5).kept == (True, True, False, False)
    assert tg.choose_clusters(stats, 0.01).kept == (True, False, False, False)     # at least one
    assert tg.choose_clusters(stats, 1.0).kept == (True,) * 4


def test_target_stats_merge_across_chunks():
    rng = np.random.default_rng(2)
    centroids = unit(rng.normal(size=(10, 8)))
    targets = unit(rng.normal(size=(300, 8)))
    whole = tg.target_stats(targets, centroids)
    parts = tg.TargetStats.empty(10)
    for chunk in np.array_split(targets, 7):
        parts = parts.merge(tg.target_stats(chunk, centroids))
    assert np.array_equal(parts.votes, whole.votes)
    assert np.allclose(parts.best_cosine, whole.best_cosine)


def test_off_target_recall_and_on_target_loss():
    world = target_world(seed=0)
    centroids = kmeans.fit_kmeans(world.pool, 60, seed=0)
    choice = tg.choose_clusters(tg.target_stats(world.targets, centroids), None)
    top, _ = kmeans.nearest(world.pool, centroids)
    removed = np.array([tg.on_target(c, choice) is not True for c in top.tolist()])
    recall, lost = removed[world.off_target].mean(), removed[~world.off_target].mean()
    assert recall >= 0.8 and lost <= 0.05, (recall, lost)
