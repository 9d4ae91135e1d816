"""k-means over L2-normalised embeddings, on plain numpy arrays: the fit on a bounded sample, the
nearest-centroid assignment, and the split of clusters too large for one worker.

The fit is faiss's k-means (faiss-cpu), spherical (centroids re-normalised every iteration, so
"nearest" is the largest cosine), as SemDeDup and DataComp fit theirs. faiss rather than
scikit-learn: the same algorithm at a fraction of the time on a few hundred thousand 512-d
vectors (BLAS distance blocks, OpenMP over centroids), no scipy/joblib stack, and its result
does not depend on the thread count (each centroid's sum runs over the points in order).

The fit sees only the sample; every other vector is assigned by `ClusterModel.assign`, a blocked
matrix product, wherever it is (a Beam worker). A cluster whose share of the sample says it
would hold more than `max_size` vectors in the whole pool gets child centroids fitted on its own
sample members, and its vectors are assigned to a child as well: the key a worker groups by is
(cluster, child), so no group is expected above `max_size`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

ASSIGN_BLOCK = 8192      # vectors per matrix product (bounds memory to BLOCK x clusters floats)


def sample_key(uid: str) -> int:
    """A stable 64-bit hash of a uid: the k-means sample is the uids with the smallest keys, the
    same on any runner and any sharding."""
    return int.from_bytes(hashlib.blake2b(uid.encode("utf-8"), digest_size=8).digest(), "big")


def sample_keys(uids: list[str]) -> np.ndarray:
    """sample_key of every uid, as uint64: the digests joined and read as one big-endian array
    (25% less than a Python int per uid; 1M uids take about a second)."""
    digest = hashlib.blake2b
    joined = b"".join([digest(u.encode("utf-8"), digest_size=8).digest() for u in uids])
    return np.frombuffer(joined, dtype=">u8").astype(np.uint64)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32, a new array); a zero or NaN row becomes zeros. One
    copy and in-place arithmetic: these arrays are the whole k-means sample, hundreds of MB."""
    x = np.array(vectors, dtype=np.float32)         # a copy: the caller's array is left alone
    norms = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    scalable = norms > 0
    if scalable.all():                               # the usual case: one pass, no masks
        x /= norms
        return x
    np.divide(x, norms, out=x, where=scalable)
    np.copyto(x, 0.0, where=~scalable)               # a zero (or NaN) row becomes zeros
    return x


def fit_kmeans(vectors: np.ndarray, k: int, seed: int = 0, niter: int = 20, unit: bool = False) -> np.ndarray:
    """Spherical k-means centroids (min(k, n) of them, unit length, float32) of `vectors`
    (`unit`: they already are normalise()'s float32 unit rows, and are not copied again)."""
    x = np.ascontiguousarray(vectors if unit else normalise(vectors))
    n, d = x.shape
    if n == 0:
        raise ValueError("k-means needs at least one vector")
    k = max(1, min(int(k), n))
    if k == 1:
        return normalise(x.mean(axis=0, keepdims=True))
    import faiss
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, n))
    km.train(x)
    return normalise(km.centroids)


TIE_MARGIN = 1e-5        # cosines this close in float32 are decided again, exactly


def _exact_cosines(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Row i's cosine to c[i] in float64, each from its own row alone (einsum's plain loop, no
    BLAS blocking): the same bits whatever else shares the batch."""
    return np.einsum("ij,ij->i", x.astype(np.float64), c.astype(np.float64))


def nearest(vectors: np.ndarray, centroids: np.ndarray,
            cosines: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """For each vector, the index of its nearest centroid (largest cosine; ties to the lowest
    index) and that cosine (None when not asked for), in blocks of ASSIGN_BLOCK vectors. The
    nearest centroid does not depend on the vector's length, so it need not be unit length.

    The answer depends on the vector alone, never on its batch. A float32 matrix product rounds
    differently with the shape of the block (BLAS picks other kernels), so a vector nearly
    equidistant from two centroids could change cluster between runs that batch it differently.
    The product only shortlists: every centroid within TIE_MARGIN of the best is compared again
    in float64, one vector at a time, and the cosine returned is computed the same way."""
    c = np.asarray(centroids, dtype=np.float32)
    index = np.empty(len(vectors), dtype=np.int64)
    cosine = np.empty(len(vectors), dtype=np.float32) if cosines else None
    for start in range(0, len(vectors), ASSIGN_BLOCK):
        # converted a block at a time (float16 vectors): the block stays in cache for the product
        block = np.asarray(vectors[start:start + ASSIGN_BLOCK], dtype=np.float32)
        sims = block @ c.T
        best = np.argmax(sims, axis=1)
        close = sims >= sims[np.arange(len(best)), best][:, None] - TIE_MARGIN
        for row in np.flatnonzero(close.sum(axis=1) > 1):
            candidates = np.flatnonzero(close[row])
            exact = _exact_cosines(np.broadcast_to(block[row], (len(candidates), c.shape[1])), c[candidates])
            best[row] = candidates[int(np.argmax(exact))]
        index[start:start + len(best)] = best
        if cosine is not None:
            cosine[start:start + len(best)] = _exact_cosines(block, c[best])
    return index, cosine


@dataclass
class ClusterModel:
    """Top-level centroids, and child centroids for the clusters that were split."""
    centroids: np.ndarray                                    # (k, d) float32, unit rows
    children: dict[int, np.ndarray] = field(default_factory=dict)
    sample_size: int = 0

    @property
    def k(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def assign(self, vectors: np.ndarray, cosines: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(cluster, child, cosine to the cluster's centroid or None when not asked for) per
        vector; child is -1 in a cluster that was not split."""
        top, cosine = nearest(vectors, self.centroids, cosines)
        child = np.full(len(vectors), -1, dtype=np.int64)
        for cluster, subs in self.children.items():
            members = np.flatnonzero(top == cluster)
            if len(members):
                child[members] = nearest(vectors[members], subs, cosines=False)[0]
        return top, child, cosine

    def group_keys(self, top: np.ndarray, child: np.ndarray) -> np.ndarray:
        """One integer per (cluster, child) pair that assign() gave, ordered as the pairs are:
        the groups the within-cluster comparison runs over."""
        return top * (1 + max((len(c) for c in self.children.values()), default=0)) + child + 1


def split_large_clusters(model: ClusterModel, sample: np.ndarray, total: int, max_size: int,
                         seed: int = 0, niter: int = 20) -> ClusterModel:
    """`model` with child centroids for every cluster expected to exceed `max_size` vectors.

    A cluster's expected size is its share of the sample times `total` (the vectors to be
    assigned). Its children are fitted on its sample members, as many as make the expected child
    half of `max_size` (headroom for the estimate's error)."""
    if len(sample) == 0 or total <= max_size:
        return model
    top, _ = nearest(sample, model.centroids, cosines=False)
    counts = np.bincount(top, minlength=model.k)
    children = {}
    for cluster in np.flatnonzero(counts * total / len(sample) > max_size).tolist():
        expected = counts[cluster] * total / len(sample)
        members = sample[top == cluster]
        parts = min(len(members), math.ceil(expected / max(1, max_size // 2)))
        if parts > 1:
            children[int(cluster)] = fit_kmeans(members, parts, seed + 1 + cluster, niter)
    return ClusterModel(model.centroids, children, model.sample_size)
