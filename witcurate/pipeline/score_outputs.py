"""After inference: a scored batch back into rows with `clip_score` and `clip_model`, and its
embeddings as one parquet-ready table (a table per batch, never a record per image)."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa

from witcurate.schemas.vectors import vector_column, vector_field

EMBEDDINGS_DIR = "embeddings"
EMBEDDINGS_TAG = "embeddings"

# Each embedding is one binary value of float16 values, L2-normalised (schemas/vectors.py: why
# bytes and not a list, and how to read them).
EMBEDDINGS = pa.schema([
    ("uid", pa.string()),
    vector_field("image_embedding"),
    vector_field("text_embedding"),
])


# How the embeddings are written: not dictionary-encoded (a vector's bytes are nearly always
# unique, so a dictionary would only be undone on every read), no compression (float16 noise
# does not compress).
EMBEDDINGS_PARQUET = {"use_dictionary": False, "compression": "none"}


def embeddings_table(uids: list[str], image: np.ndarray, text: np.ndarray) -> pa.Table:
    """(uid, image_embedding, text_embedding), float16, a row per uid, from [B, D] arrays."""
    return pa.Table.from_arrays([pa.array(uids, pa.string()), vector_column(image), vector_column(text)],
                                schema=EMBEDDINGS)


class AttachScores(beam.DoFn):
    """A batch's PredictionResult -> its rows with clip_score and clip_model; the batch's
    embeddings table to the EMBEDDINGS_TAG output."""

    def __init__(self, label: str):
        self.label = label

    def process(self, result):
        rows, scored = result.example, result.inference
        for row, score in zip(rows, scored.scores.tolist()):   # float32 values, as stored
            out = dict(row)
            out["clip_score"] = score
            out["clip_model"] = self.label
            yield out
        yield beam.pvalue.TaggedOutput(EMBEDDINGS_TAG, embeddings_table(
            [str(row["uid"]) for row in rows], scored.image_embeddings, scored.text_embeddings))
