"""The target set of the target-distribution filter: its image embeddings, read in chunks from a
file, or computed from target images with the score stage's model.

Accepted (`target.embeddings`):
  * a `.npy` file holding an (n, d) float array;
  * a `.parquet` file, a folder of `*.parquet` parts, or a score stage directory (its
    `embeddings/part-*.parquet`), with an `image_embedding` (or `embedding`) column: a list of
    numbers per row, or float16 bytes as the score stage stores them (schemas/vectors.py).
Or `target.images`: a folder of images and WebDataset/img2dataset tars (searched recursively),
a glob of such files, or one file; they are embedded on the launching machine with the model the
score stage used (score.model with score.pretrained, or the run's scorer checkpoint), written to
the stage's `target_embeddings.npy`, and read from there like any `.npy`. That suits target sets
of thousands to tens of thousands of images; embed a larger one once and pass the embeddings.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from typing import Callable, Iterator

import numpy as np
import pyarrow.parquet as pq

from witcurate.errors import InputError
from witcurate.filters.kmeans import normalise
from witcurate.pipeline import fs
from witcurate.schemas.vectors import is_bytes, vector_matrix, vector_sizes

CHUNK = 4096
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
COLUMNS = ("image_embedding", "embedding")
_HINT = ("target.embeddings takes a .npy (n, d) array, a parquet file or folder of parts with an "
         "image_embedding column, or a score stage directory")


def _npy_chunks(path: str, chunk: int) -> Iterator[np.ndarray]:
    with fs.open_file(path) as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if len(shape) != 2 or fortran or dtype.kind != "f":
            raise InputError(f"{path} holds a {dtype} array of shape {shape}", "it must be an (n, d) "
                             "float array in C order: np.save(path, embeddings)")
        rows, dim = shape
        for start in range(0, rows, chunk):
            count = min(chunk, rows - start)
            data = f.read(count * dim * dtype.itemsize)
            yield np.frombuffer(data, dtype=dtype).reshape(count, dim)
        if rows == 0:
            yield np.zeros((0, dim), dtype=np.float32)


def _parquet_files(path: str) -> list[str]:
    if path.endswith(".parquet"):
        return [path]
    if fs.exists(fs.join(path, "embeddings")):
        return fs.glob(fs.join(path, "embeddings", "part-*.parquet"))
    return fs.glob(fs.join(path, "*.parquet"))


def _parquet_chunks(path: str, chunk: int) -> Iterator[np.ndarray]:
    files = _parquet_files(path)
    if not files:
        raise InputError(f"no target embeddings found at {path}", _HINT)
    for file in files:
        with fs.open_file(file) as f:
            reader = pq.ParquetFile(f)
            column = next((c for c in COLUMNS if c in reader.schema_arrow.names), None)
            if column is None:
                raise InputError(f"{file} has no {' or '.join(COLUMNS)} column", _HINT)
            for batch in reader.iter_batches(batch_size=chunk, columns=[column]):
                yield _batch_vectors(batch.column(0), file)


def _batch_vectors(column, file: str) -> np.ndarray:
    """A batch's vectors (binary float16 values as the score stage stores them, or lists of
    numbers) as float32 rows; a null row is NaN, which usable() leaves out."""
    sizes = vector_sizes(column)
    dims = set(sizes[sizes >= 0].tolist())
    if len(dims) > 1:
        raise InputError(f"{file}: target embeddings of several sizes {sorted(dims)}", _HINT)
    dim = dims.pop() if dims else 0
    # lists of float32 or float64 keep their precision (vector_matrix reads float16)
    if not is_bytes(column.type):
        return np.array([v if v is not None else [np.nan] * dim for v in column.to_pylist()],
                        dtype=np.float32).reshape(len(column), dim)
    vectors, fits = vector_matrix(column, dim)
    out = vectors.astype(np.float32)
    out[~fits] = np.nan
    return out


def raw_chunks(path: str, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """The target embeddings as they are stored, `chunk` rows at a time."""
    if not fs.exists(path):
        raise InputError(f"target embeddings not found: {path}", _HINT)
    if path.endswith(".npy"):
        return _npy_chunks(path, chunk)
    if path.endswith(".parquet") or fs.isdir(path):
        return _parquet_chunks(path, chunk)
    raise InputError(f"cannot read target embeddings from {path}", _HINT)


def usable(chunk: np.ndarray) -> np.ndarray:
    """The rows of a chunk that can be compared (finite, not all zero), unit length, float32."""
    values = np.asarray(chunk, dtype=np.float32)
    good = np.isfinite(values).all(axis=1) & np.any(values != 0, axis=1)
    return normalise(values[good])


def target_chunks(path: str) -> Iterator[np.ndarray]:
    """Usable target embeddings, unit length, a chunk at a time (a Beam FlatMap over paths)."""
    for chunk in raw_chunks(path):
        good = usable(chunk)
        if len(good):
            yield good


def check_targets(path: str, pool_dim: int) -> dict[str, int]:
    """{rows, usable, dim} of a target set, read once; a one-line InputError when it is empty,
    of another embedding size than the pool, or holds nothing usable."""
    rows = good = 0
    dim = None
    for chunk in raw_chunks(path):
        dim = chunk.shape[1] if dim is None else dim
        rows += len(chunk)
        good += len(usable(chunk))
    if not rows:
        raise InputError(f"the target set {path} is empty", "give it at least one embedding or image")
    if dim != pool_dim:
        raise InputError(f"the target embeddings in {path} have size {dim}, the pool's (score stage) "
                         f"have size {pool_dim}", "embed the target set with the model the score stage used")
    if not good:
        raise InputError(f"none of the {rows} target embeddings in {path} is usable (NaN, infinite "
                         f"or all zeros)", "recompute the target embeddings")
    return {"rows": rows, "usable": good, "dim": dim}


# --- target images ---------------------------------------------------------------------------

def image_sources(spec: str) -> list[str]:
    """The image and tar files of `target.images`: a glob, a folder (recursively) or one file."""
    if any(c in spec for c in "*?["):
        files = fs.glob(spec)
    elif fs.isdir(spec):
        files = fs.glob(fs.join(spec, "**"))
    else:
        files = [spec] if fs.exists(spec) else []
    return sorted(f for f in files if f.lower().endswith(IMAGE_SUFFIXES + (".tar",)))


def target_images(spec: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every target image, tar members included, in a stable order."""
    files = image_sources(spec)
    if not files:
        raise InputError(f"target.images: no images or .tar files at {spec}",
                         "point it at a folder of images or WebDataset tars, or a glob of tars")
    for path in files:
        with fs.open_file(path) as f:
            if not path.lower().endswith(".tar"):
                yield path, f.read()
                continue
            with tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                        yield f"{posixpath.basename(path)}:{member.name}", tar.extractfile(member).read()


def embed_images(spec: str, model_name: str, weights: str, out_path: str,
                 progress: Callable[[str], None], batch_size: int = 64) -> dict[str, int]:
    """Embed the target images with open_clip `model_name` and `weights` (its eval preprocessing,
    L2-normalised image embeddings) into an (n, d) float16 .npy at `out_path`."""
    import torch
    from PIL import Image

    from witcurate.pipeline.inference import local_weights
    from witcurate.trainer.model import create_model
    model, _, preprocess, _ = create_model(model_name, local_weights(weights), "cpu")
    model.eval()
    embedded, batch, unreadable = [], [], 0

    def flush():
        with torch.inference_mode():
            features = model.encode_image(torch.stack(batch))
        embedded.append(torch.nn.functional.normalize(features.float(), dim=-1).numpy().astype(np.float16))
        batch.clear()

    for _, data in target_images(spec):
        try:
            with Image.open(io.BytesIO(data)) as img:
                batch.append(preprocess(img.convert("RGB")))
        except Exception:  # a broken target image is counted, not fatal
            unreadable += 1
            continue
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not embedded:
        raise InputError(f"target.images: none of the images at {spec} could be read",
                         "point it at readable JPEG/PNG/WebP images or tars of them")
    matrix = np.concatenate(embedded)
    with fs.open_file(out_path, "wb") as f:
        np.save(f, matrix)
    progress(f"[target] embedded {len(matrix)} target images with {model_name}"
             + (f", {unreadable} unreadable" if unreadable else ""))
    return {"images": len(matrix), "unreadable": unreadable}
