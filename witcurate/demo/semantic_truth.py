"""Judge the embedding stages (semdedup, target) of a finished demo run against the ground truth,
and trace their curves over the knobs: semdedup's cosine threshold, the target filter's kept
fraction of clusters.

What each stage did is read from its output (kept rows and rejects). The curves replay the
stage's own rule on the score stage's saved embeddings: the same k-means (fitted on the same
sample, the uids with the smallest stable hashes, with the stage's seed), the same grouping and
survivor rule, the same target statistics, at other settings. The replay skips what only matters
at scale (semdedup's split of clusters larger than one worker), so at the demo's size each
point is what the stage would have done.

Ground truth, per pair: a truth group is an original and every copy of it (exact, near and
semantic duplicates: truth's dup_of); a pair that copies nothing is a group of one.
  * semdedup: a removal is right while another member of the removed pair's truth group stays in
    its duplicate group; recall is right removals over what could be removed (each truth group's
    members at the stage, less one); a truth group with no member left was lost, and a lost
    group whose pair is `clean` counts as a clean pair removed.
  * target: recall is the share of `off_target` pairs reaching the stage that it rejects; the
    cost is the share of `clean` pairs reaching it that it rejects.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import numpy as np
import pyarrow.parquet as pq

from witcurate.filters import kmeans
from witcurate.filters.semantic_dedup import survivor_order
from witcurate.filters.target import OFF_TARGET_CLUSTER, choose_clusters, target_stats
from witcurate.pipeline import fs
from witcurate.pipeline.embedding_fit import fit_model
from witcurate.pipeline.tables import parquet_files, read_table
from witcurate.schemas.vectors import vector_matrix, vector_sizes

SEMANTIC_DUPLICATE = "semantic_duplicate"
THRESHOLDS = tuple(round(t, 3) for t in np.arange(0.90, 1.0001, 0.005))
KEEP_FRACTIONS = tuple(round(f, 3) for f in np.arange(0.05, 1.0001, 0.05))
DUPLICATE_TARGET = {"recall": 0.9, "clean_removed": 0.02}
OFF_TARGET_TARGET = {"recall": 0.8, "clean_removed": 0.05}


class Truth:
    """The ground truth a judgement needs: each url's kind and truth group."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.kind = {r["url"]: r["kind"] for r in rows}
        self.group = {r["url"]: r.get("dup_of") or r["url"] for r in rows}


def stage_input(stage_dir: str) -> tuple[list[dict[str, Any]], dict[str, tuple[str, dict]]]:
    """Every row that reached a stage (its kept rows and its rejects' records, uid, url and CLIP
    score each), and uid -> (reason, record) of its rejects."""
    rows, rejected = [], {}
    kept = read_table(stage_dir, columns=["uid", "url", "clip_score"])
    if kept is not None:
        rows += kept.to_pylist()
    for path in parquet_files(fs.join(stage_dir, "rejects")):
        with fs.open_file(path) as f:
            table = pq.read_table(f, columns=["uid", "reason", "record"])
        for uid, reason, record in zip(*(table.column(c).to_pylist() for c in ("uid", "reason", "record"))):
            record = json.loads(record)
            rejected[uid] = (reason, record)
            rows.append({"uid": uid, "url": record.get("url"), "clip_score": record.get("clip_score")})
    return rows, rejected


def saved_embeddings(score_dir: str) -> dict[str, np.ndarray]:
    """uid -> float16 image embedding, for every usable embedding the score stage saved (a uid
    saved twice: its first)."""
    found: dict[str, np.ndarray] = {}
    for path in parquet_files(fs.join(score_dir, "embeddings")):
        with fs.open_file(path) as f:
            table = pq.read_table(f, columns=["uid", "image_embedding"])
        column = table.column("image_embedding")
        sizes = vector_sizes(column)
        vectors, fits = vector_matrix(column, int(sizes.max(initial=0)))
        for row, uid in enumerate(table.column("uid").to_pylist()):
            v = vectors[row]
            if fits[row] and np.isfinite(v.astype(np.float32)).all() and np.any(v):
                found.setdefault(uid, v)
    return found


def embeddings_for(score_dir: str, uids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(float16 image embeddings of the uids that have one, in the given order; which uids)."""
    return take_embeddings(saved_embeddings(score_dir), uids)


def take_embeddings(found: dict[str, np.ndarray], uids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """embeddings_for() from embeddings already read."""
    have = np.array([i for i, u in enumerate(uids) if u in found], dtype=np.int64)
    vectors = np.stack([found[uids[i]] for i in have.tolist()]) if len(have) else np.zeros((0, 0), np.float16)
    return vectors, have


def replay_clusters(uids: list[str], vectors: np.ndarray, section: dict[str, Any], max_size: int):
    """(cluster key per vector, the model) as the stage fits and assigns them."""
    keys = kmeans.sample_keys(list(uids))
    order = np.argsort(keys, kind="stable")[:int(section["sample"])]
    model = fit_model(vectors[order], len(vectors), int(section["clusters"]), max_size,
                      int(section.get("seed", 0)), int(section.get("niter", 20)))
    top, child, _ = model.assign(kmeans.normalise(vectors))
    return model.group_keys(top, child), model


# --- semdedup -------------------------------------------------------------------------------------

def _pairs(vectors: np.ndarray, cluster: np.ndarray, floor: float) -> Iterator[tuple[int, int, float]]:
    """(i, j, cosine) of every pair in the same cluster with cosine >= floor."""
    x = kmeans.normalise(vectors)
    for c in np.unique(cluster).tolist():
        members = np.flatnonzero(cluster == c)
        sims = x[members] @ x[members].T
        ii, jj = np.nonzero(np.triu(sims >= floor, 1))
        for a, b in zip(ii.tolist(), jj.tolist()):
            yield int(members[a]), int(members[b]), float(sims[a, b])


def _components(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])


def judge_dedup(reached: list[str], removed: set[str], truth: Truth) -> dict[str, Any]:
    """Recall and clean pairs removed of a dedup that removed `removed` of the urls `reached`."""
    members: dict[str, list[str]] = {}
    for url in reached:
        members.setdefault(truth.group.get(url, url), []).append(url)
    right = possible = lost_clean = lost_other = 0
    for urls in members.values():
        stay = sum(u not in removed for u in urls)
        possible += len(urls) - 1
        right += len(urls) - max(stay, 1)
        if not stay:
            clean = any(truth.kind.get(u) == "clean" for u in urls)
            lost_clean, lost_other = lost_clean + clean, lost_other + (not clean)
    clean_at_stage = sum(truth.kind.get(u) == "clean" for u in reached)
    return {"removed": len(removed), "right": right, "possible": possible,
            "recall": round(right / possible, 4) if possible else 1.0,
            "clean_removed": lost_clean, "clean_at_stage": clean_at_stage,
            "clean_removed_share": round(lost_clean / clean_at_stage, 4) if clean_at_stage else 0.0,
            "other_pairs_lost": lost_other}


def _removed_at(edges: list[tuple[int, int, float]], threshold: float, uids: list[str], urls: list[str],
                order: list[int]) -> set[str]:
    """The urls semdedup removes at `threshold`: every member of a connected group but the first
    in survivor order."""
    t = np.float32(threshold)
    comp = _components(len(uids), [(a, b) for a, b, c in edges if np.float32(c) >= t])
    best: dict[int, int] = {}
    for i in order:
        best.setdefault(int(comp[i]), i)
    return {urls[i] for i in range(len(uids)) if best[int(comp[i])] != i}


def semdedup_quality(out_root: str, truth: Truth) -> dict[str, Any] | None:
    """What the semdedup stage removed, judged, and its curve over the cosine threshold."""
    stage_dir = fs.join(out_root, "semdedup")
    manifest = _manifest(stage_dir)
    section = (manifest or {}).get("config", {}).get("semdedup") or {}
    if not manifest or not section.get("enabled", True):
        return None
    rows, rejected = stage_input(stage_dir)
    reached = [r["url"] for r in rows]
    removed = {rec.get("url") for reason, rec in rejected.values() if reason == SEMANTIC_DUPLICATE}
    result = {"threshold": section["threshold"], "clusters": section["clusters"],
              **judge_dedup(reached, removed, truth)}
    vectors, have = embeddings_for(_score_dir(manifest, out_root), [r["uid"] for r in rows])
    if len(have):
        uids = [rows[i]["uid"] for i in have.tolist()]
        urls = [rows[i]["url"] for i in have.tolist()]
        cluster, _ = replay_clusters(uids, vectors, section, int(section.get("max_cluster_size", 1 << 62)))
        edges = list(_pairs(vectors, cluster, min(THRESHOLDS)))
        order = survivor_order(uids, [rows[i]["clip_score"] for i in have.tolist()])
        result["curve"] = [{"threshold": t, **judge_dedup(reached, _removed_at(edges, t, uids, urls, order), truth)}
                           for t in THRESHOLDS]
    return result


def judge_target(reached: list[str], removed: set[str], truth: Truth) -> dict[str, Any]:
    """Off-target recall and the share of clean pairs removed of a filter that removed `removed`."""
    off = [u for u in reached if truth.kind.get(u) == "off_target"]
    clean = [u for u in reached if truth.kind.get(u) == "clean"]
    off_removed, clean_removed = sum(u in removed for u in off), sum(u in removed for u in clean)
    return {"removed": len(removed), "off_target_at_stage": len(off), "off_target_removed": off_removed,
            "recall": round(off_removed / len(off), 4) if off else 1.0,
            "clean_at_stage": len(clean), "clean_removed": clean_removed,
            "clean_removed_share": round(clean_removed / len(clean), 4) if clean else 0.0}


def _target_curve(rows, vectors, have, section, targets: str, truth: Truth, clusters: int,
                  fit_on: tuple[list[str], np.ndarray]) -> list[dict]:
    """The curve at `clusters`, the clusters fitted as the stage fits them, on `fit_on` (uids and
    their vectors: the pool's saved embeddings, or the rows that reached the stage)."""
    from witcurate.pipeline.target_set import target_chunks

    urls = [rows[i]["url"] for i in have.tolist()]
    reached = [r["url"] for r in rows]
    _, model = replay_clusters(*fit_on, {**section, "clusters": clusters}, 1 << 62)
    top = model.assign(kmeans.normalise(vectors))[0]
    stats = None
    for chunk in target_chunks(targets):
        part = target_stats(chunk, model.centroids)
        stats = part if stats is None else stats.merge(part)
    curve = []
    for fraction in (*KEEP_FRACTIONS, None):
        choice = choose_clusters(stats, fraction)
        removed = {urls[i] for i, c in enumerate(top.tolist()) if not choice.kept[c]}
        curve.append({"clusters": model.k, "keep_fraction": fraction, "kept_clusters": choice.kept_count,
                      **judge_target(reached, removed, truth)})
    return curve


def target_quality(out_root: str, truth: Truth) -> dict[str, Any] | None:
    """What the target stage removed, judged, and its curves over the kept fraction of clusters
    (at the stage's cluster count, half and twice it)."""
    stage_dir = fs.join(out_root, "target")
    manifest = _manifest(stage_dir)
    section = (manifest or {}).get("config", {}).get("target") or {}
    if not manifest or not section.get("enabled"):
        return None
    rows, rejected = stage_input(stage_dir)
    removed = {rec.get("url") for reason, rec in rejected.values() if reason == OFF_TARGET_CLUSTER}
    facts = manifest.get("target") or {}
    result = {"clusters": facts.get("clusters", section["clusters"]), "keep_fraction": section.get("keep_fraction"),
              "clusters_kept": facts.get("clusters_kept"),
              **judge_target([r["url"] for r in rows], removed, truth)}
    targets = fs.join(stage_dir, "target_embeddings.npy")
    targets = targets if fs.exists(targets) else facts.get("target_set")
    saved = saved_embeddings(_score_dir(manifest, out_root))
    vectors, have = take_embeddings(saved, [r["uid"] for r in rows])
    if len(have) and targets and fs.exists(targets):
        k = int(section["clusters"])
        result["fit"] = section.get("fit", "input")       # runs from before target.fit: input
        fit_on = ((list(saved), np.stack(list(saved.values()))) if result["fit"] == "pool"
                  else ([rows[i]["uid"] for i in have.tolist()], vectors))
        result["curves"] = {str(c): _target_curve(rows, vectors, have, section, targets, truth, c, fit_on)
                            for c in sorted({max(2, k // 2), k, 2 * k})}
    return result


def _manifest(stage_dir: str) -> dict[str, Any] | None:
    path = fs.join(stage_dir, "_SUCCESS.json")
    return fs.read_json(path) if fs.exists(path) else None


def _score_dir(manifest: dict[str, Any], out_root: str) -> str:
    """The score stage directory a stage read its embeddings from."""
    found = (manifest.get("inputs") or {}).get("score")
    path = found.get("path") if isinstance(found, dict) else found
    return path if path and fs.exists(path) else fs.join(out_root, "score")
