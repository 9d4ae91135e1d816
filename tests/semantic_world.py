"""Synthetic image embeddings with planted structure, and score stage directories made of them,
for the semdedup and target tests (tests/test_semantic*.py).

Clean images sit around topic centres (cosine ~0.6 between two of one topic); some have a
"sibling", another photo of the same scene (cosine ~0.85: not a duplicate, must be kept); the
planted duplicate groups are one scene re-rendered 2 to 200 times (cosine ~0.95 between
members). For the target filter, some topics are off-target (banners, charts): the target set
is drawn from the on-target topics only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.pipeline.score_outputs import EMBEDDINGS_PARQUET
from witcurate.pipeline.score_outputs import embeddings_table as score_embeddings_table

GROUP_SIZES = (2, 2, 2, 3, 3, 4, 5, 8, 20, 50, 200)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def around(rng, centre: np.ndarray, n: int, spread: float) -> np.ndarray:
    """n unit vectors around `centre`: centre + spread * an isotropic unit-norm-ish noise."""
    d = centre.shape[-1]
    return unit(centre + spread * rng.normal(size=(n, d)) / np.sqrt(d))


def uid_of(i: int, salt: str = "") -> str:
    return hashlib.sha256(f"{salt}{i}".encode()).hexdigest()[:32]


@dataclass
class DuplicateWorld:
    vectors: np.ndarray          # (n, d) float32, unit rows
    group: np.ndarray            # planted duplicate group per row, -1 for clean rows
    uids: list[str]
    scores: np.ndarray           # CLIP scores

    def clean(self) -> np.ndarray:
        return self.group < 0

    def should_remove(self) -> int:
        """Members beyond one per planted group."""
        sizes = np.bincount(self.group[self.group >= 0])
        return int((sizes[sizes > 0] - 1).sum())


def duplicate_world(n_clean: int = 3000, groups: int = 60, dim: int = 64, topics: int = 30,
                    siblings: float = 0.1, seed: int = 0) -> DuplicateWorld:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(topics, dim)))
    clean = np.concatenate([around(rng, centres[t], 1, 1.0 / 1.2)
                            for t in rng.integers(0, topics, n_clean)])
    src = rng.choice(n_clean, int(siblings * n_clean), replace=False)
    sibs = unit(clean[src] + 0.62 * rng.normal(size=(len(src), dim)) / np.sqrt(dim))
    parts, ids = [clean, sibs], [np.full(n_clean + len(src), -1)]
    for g in range(groups):
        size = GROUP_SIZES[g % len(GROUP_SIZES)]
        scene = around(rng, centres[rng.integers(0, topics)], 1, 1.0 / 1.2)[0]
        parts.append(unit(scene + 0.22 * rng.normal(size=(size, dim)) / np.sqrt(dim)))
        ids.append(np.full(size, g))
    vectors = np.concatenate(parts)
    order = rng.permutation(len(vectors))
    return DuplicateWorld(vectors[order], np.concatenate(ids)[order],
                          [uid_of(i, f"dup{seed}-") for i in range(len(vectors))],
                          rng.uniform(0.2, 0.9, len(vectors)).astype(np.float32))


@dataclass
class TargetWorld:
    pool: np.ndarray
    off_target: np.ndarray       # bool per pool row
    targets: np.ndarray
    uids: list[str]


def target_world(n_on: int = 2400, n_off: int = 600, n_targets: int = 1500, dim: int = 64,
                 on_topics: int = 24, off_topics: int = 6, seed: int = 0) -> TargetWorld:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(on_topics + off_topics, dim)))
    on_t = rng.integers(0, on_topics, n_on)
    off_t = rng.integers(on_topics, on_topics + off_topics, n_off)
    draw = lambda topics: np.concatenate([around(rng, centres[t], 1, 1.0 / 1.2) for t in topics])  # noqa: E731
    pool = np.concatenate([draw(on_t), draw(off_t)])
    off = np.concatenate([np.zeros(n_on, bool), np.ones(n_off, bool)])
    order = rng.permutation(len(pool))
    targets = draw(rng.integers(0, on_topics, n_targets))
    return TargetWorld(pool[order], off[order], targets,
                       [uid_of(i, f"tgt{seed}-") for i in range(len(pool))])


def scored_row(uid: str, i: int, score: float) -> dict:
    return dict(uid=uid, url=f"http://img.example.com/{i}.jpg", caption=f"a red circle {i}",
                source="pool", query_ids=[i % 3], keep_probability=1.0, shard="images/00000.tar",
                key=f"{i:09d}", width=64, height=64, original_width=640, original_height=480,
                sha256=hashlib.sha256(uid.encode()).hexdigest(), phash=i, clip_score=float(score),
                clip_model="fake")


def embeddings_table(uids: list[str], vectors: np.ndarray) -> pa.Table:
    """The score stage's embeddings table (its own writer), the vectors as image and text."""
    return score_embeddings_table(uids, vectors, vectors)


def list_embeddings_table(uids: list[str], vectors: np.ndarray) -> pa.Table:
    """The same as lists of float16, the layout score stage directories had before the bytes."""
    flat = np.asarray(vectors, dtype=np.float16)
    offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32)
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1)))
    return pa.table({"uid": pa.array(uids, pa.string()), "image_embedding": column, "text_embedding": column})


def write_score_dir(root: Path, uids: list[str], vectors: np.ndarray, scores=None, parts: int = 2,
                    extra_embeddings: int = 0) -> Path:
    """A finished score stage directory: SCORED rows (split in `parts`), their embeddings (plus
    `extra_embeddings` of pairs score rejected, without a row) and a manifest."""
    root.mkdir(parents=True)
    (root / "embeddings").mkdir()
    (root / "rejects").mkdir()
    scores = np.full(len(uids), 0.5) if scores is None else scores
    rows = [scored_row(u, i, s) for i, (u, s) in enumerate(zip(uids, scores))]
    cut = np.array_split(np.arange(len(rows)), parts)
    for p, idx in enumerate(cut):
        pq.write_table(pa.Table.from_pylist([rows[i] for i in idx], schemas.SCORED),
                       root / f"part-{p:05d}.parquet")
        pq.write_table(embeddings_table([uids[i] for i in idx[::-1]], vectors[idx[::-1]]),
                       root / "embeddings" / f"part-{p:05d}.parquet", **EMBEDDINGS_PARQUET)
    if extra_embeddings:
        rng = np.random.default_rng(1)
        pq.write_table(embeddings_table([uid_of(i, "rejected-") for i in range(extra_embeddings)],
                                        unit(rng.normal(size=(extra_embeddings, vectors.shape[1])))),
                       root / "embeddings" / f"part-{parts:05d}.parquet", **EMBEDDINGS_PARQUET)
    pq.write_table(schemas.REJECTS.empty_table(), root / "rejects" / "part-00000.parquet")
    (root / "_SUCCESS.json").write_text(json.dumps({
        "stage": "score", "fingerprint": f"fp-{len(uids)}", "model": "fake",
        "counts": {"in": len(uids), "kept": len(uids), "rejected": 0, "reasons": {}}}))
    return root
