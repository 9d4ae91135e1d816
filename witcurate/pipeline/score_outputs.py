"""After inference: a prediction back into its row with `clip_score` and `clip_model`, and the
embeddings as parquet-ready tables."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa

from witcurate.filters import clip_score as rules

EMBEDDINGS_DIR = "embeddings"
EMBEDDINGS_TAG = "embeddings"

EMBEDDINGS = pa.schema([
    ("uid", pa.string()),
    ("image_embedding", pa.list_(pa.float16())),    # L2-normalised
    ("text_embedding", pa.list_(pa.float16())),
])


class AttachScore(beam.DoFn):
    """PredictionResult -> the row with clip_score and clip_model; embeddings to a side output."""

    def __init__(self, label: str):
        self.label = label

    def process(self, result):
        row, score = result.example, result.inference
        out = dict(row)
        out["clip_score"] = rules.as_stored(score.score)
        out["clip_model"] = self.label
        yield out
        yield beam.pvalue.TaggedOutput(
            EMBEDDINGS_TAG, (str(row["uid"]), score.image_embedding, score.text_embedding))


def embeddings_table(batch: list[tuple[str, np.ndarray, np.ndarray]]) -> pa.Table:
    """A parquet-ready table of (uid, image_embedding, text_embedding), float16, one row a uid."""
    uids = [u for u, _, _ in batch]

    def column(vectors: list[np.ndarray]) -> pa.Array:
        flat = np.stack(vectors).astype(np.float16)
        offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1)))

    return pa.Table.from_arrays(
        [pa.array(uids, pa.string()), column([i for _, i, _ in batch]), column([t for _, _, t in batch])],
        schema=EMBEDDINGS)
