"""The CLIP-score model for Beam RunInference: a ModelHandler around an open_clip model.

An example is a whole ScoreBatch (uint8 pixels, tokenised captions and the metadata rows they
came with, as the decode step made it: `score_decode`); a prediction is one PredictionResult per
batch whose `example` is the batch's rows (the pixels are dropped) and whose `inference` is a
ScoredBatch: for every row the cosine similarity of the L2-normalised image and text embeddings
(a plain cosine in [-1, 1], not the x100 logit scale), plus both embeddings as float16 for later
dedupe, clustering or retrieval. Nothing here runs once per image.

The model is loaded once per worker process by `load_model` (RunInference keeps it in a
per-process shared handle); with `share_model_across_processes` one copy serves all processes of
a machine, which suits one big GPU model and several SDK processes. The decode step makes the
batches (score.batch_size images each), so RunInference passes them on one at a time. Inference
runs under `torch.inference_mode`, with autocast (fp16 or bf16) on CUDA only; the similarity
itself is always computed in float32.

The model's label (`clip_model`) names a local checkpoint by its sha256: the stage works it out
once in the launcher and hands it to the handler; `checkpoint_digest` reads a checkpoint in full
at most once per process for each version of the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence

import fsspec
import numpy as np
import torch
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from witcurate.pipeline import fs
from witcurate.pipeline.score_decode import ScoreBatch, to_model_input

# score.precision's choices (config_checks.SCORE_PRECISIONS, checked when the config loads).
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


class ScoredBatch(NamedTuple):
    scores: np.ndarray                # float32 [B]: cosine similarity per row
    image_embeddings: np.ndarray      # float16 [B, D], L2-normalised
    text_embeddings: np.ndarray       # float16 [B, D], L2-normalised


@dataclass
class LoadedClip:
    model: Any
    device: torch.device
    autocast_dtype: torch.dtype | None


def local_weights(weights: str) -> str:
    """A checkpoint on a remote filesystem (gs://...) copied to local disk once per machine, since
    torch.load reads local files; tags and local paths come back unchanged.

    The copy is named by the remote file's size and modification time as well as its URL: a
    checkpoint rewritten at the same URL (the scorer stage run again) is fetched again, never
    served stale from an earlier copy, and that earlier copy is removed."""
    if "://" not in weights or weights.startswith("file://"):
        return weights[len("file://"):] if weights.startswith("file://") else weights
    folder = os.path.join(tempfile.gettempdir(), "witcurate-weights",
                          hashlib.sha1(weights.encode("utf-8")).hexdigest()[:16])
    version = hashlib.sha1(repr(fs.size_and_mtime(weights)).encode("utf-8")).hexdigest()[:12]
    local = os.path.join(folder, f"{version}-{posixpath.basename(weights)}")
    if not os.path.exists(local):
        os.makedirs(folder, exist_ok=True)
        partial = f"{local}.{os.getpid()}.part"
        with fsspec.open(weights, "rb") as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        os.replace(partial, local)
        for name in os.listdir(folder):          # older versions of this URL
            if not name.endswith(".part") and os.path.join(folder, name) != local:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))
    return local


# sha256 of each checkpoint version (URL or path, size, mtime) this process has hashed.
_DIGESTS: dict[tuple[str, int, str], str] = {}


def checkpoint_digest(path: str) -> str:
    """The sha256 of a checkpoint's content, read in full once per process for each version of
    the file (its size and modification time), however many times it is asked for."""
    version = (path, *fs.size_and_mtime(path))
    if version not in _DIGESTS:
        digest = hashlib.sha256()
        with fs.open_file(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[version] = digest.hexdigest()
    return _DIGESTS[version]


def model_label(model_name: str, weights: str) -> str:
    """What `clip_model` records: "ViT-B-32:openai", "witcurate-tiny:checkpoint.pt@sha256:<12 hex>"
    for a local checkpoint (its content, not where it lay, so the same data built elsewhere is
    byte-identical), or "ViT-B-32:random" for an untrained model."""
    if weights and fs.exists(weights):
        return f"{model_name}:{posixpath.basename(weights)}@sha256:{checkpoint_digest(weights)[:12]}"
    return f"{model_name}:{weights or 'random'}"


class ClipScoreModelHandler(ModelHandler[ScoreBatch, PredictionResult, LoadedClip]):
    """Scores ScoreBatches (pixels, tokens, rows) with an open_clip model.

    `weights` is an open_clip pretrained tag ("openai") or a checkpoint path (local or gs://);
    empty means random init (benchmarks). `device` is auto|cpu|cuda[:N]; `precision`
    fp16|bf16|fp32 sets the CUDA autocast dtype (CPU always runs float32); `accelerator` is a
    Beam resource hint for the inference step (e.g. "type:nvidia-l4;count:1;install-nvidia-driver");
    `cpu_threads` caps torch's threads in the worker process when it runs on CPU; `label` is
    the model's label when the caller has worked it out already (else it is, once). The values
    come from a checked config (witcurate.config_checks): precision one of PRECISIONS,
    1 <= min_batch_size <= max_batch_size; the decode step makes batches of max_batch_size.
    """

    def __init__(self, model_name: str, weights: str = "", *, device: str = "auto",
                 precision: str = "fp16", min_batch_size: int = 1, max_batch_size: int = 64,
                 share_model_across_processes: bool = False, accelerator: str = "",
                 cpu_threads: int | None = None, label: str = ""):
        # Each element is already a batch of up to max_batch_size images (the decode step's).
        super().__init__(min_batch_size=1, max_batch_size=1, large_model=share_model_across_processes)
        self.batch_size = max_batch_size
        self.model_name = model_name
        self.weights = weights
        self.device = device
        self.precision = precision
        self.accelerator = accelerator
        self.cpu_threads = cpu_threads
        self._label = label

    @property
    def label(self) -> str:
        """The model's label, worked out (a checkpoint hashed) once per handler, not per prediction."""
        if not self._label:
            self._label = model_label(self.model_name, self.weights)
        return self._label

    def load_model(self) -> LoadedClip:
        from witcurate.trainer.model import create_model, resolve_device
        device = resolve_device(self.device)
        if device.type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        model, *_ = create_model(self.model_name, local_weights(self.weights), str(device))
        model.eval()
        dtype = PRECISIONS[self.precision] if device.type == "cuda" else None
        return LoadedClip(model, device, dtype)

    def run_inference(self, batch: Sequence[ScoreBatch], model: LoadedClip,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        results = []
        for images in batch:
            scores, image_emb, text_emb = score_batch(model, to_model_input(images, model.device), images.tokens)
            scored = ScoredBatch(scores.cpu().numpy(), image_emb.to(torch.float16).cpu().numpy(),
                                 text_emb.to(torch.float16).cpu().numpy())
            results.append(PredictionResult(images.rows, scored, self.label))
        return results

    def get_num_bytes(self, batch: Sequence[ScoreBatch]) -> int:
        # The default pickles the whole batch just to count it; the tensors' size is enough.
        return sum(b.images.element_size() * b.images.nelement() + b.tokens.element_size() * b.tokens.nelement()
                   for b in batch)

    def get_resource_hints(self) -> dict:
        # Beam's resource hint: on Dataflow, only the inference step asks for a GPU.
        return {"accelerator": self.accelerator} if self.accelerator else {}

    def get_metrics_namespace(self) -> str:
        return "witcurate_score"

    def __repr__(self) -> str:
        return f"ClipScoreModelHandler({self.label}, device={self.device}, precision={self.precision})"


def score_batch(model: LoadedClip, images: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine scores and the L2-normalised float32 image and text embeddings of a batch."""
    device = model.device
    autocast = (torch.autocast(device_type="cuda", dtype=model.autocast_dtype)
                if model.autocast_dtype is not None else contextlib.nullcontext())
    with torch.inference_mode():
        with autocast:
            image_emb = model.model.encode_image(images.to(device, non_blocking=True))
            text_emb = model.model.encode_text(tokens.to(device, non_blocking=True))
        image_emb = torch.nn.functional.normalize(image_emb.float(), dim=-1)
        text_emb = torch.nn.functional.normalize(text_emb.float(), dim=-1)
        scores = (image_emb * text_emb).sum(dim=-1)
    return scores, image_emb, text_emb
