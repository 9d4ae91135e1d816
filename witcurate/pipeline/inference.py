"""The CLIP-score model for Beam RunInference: a ModelHandler around an open_clip model.

An example is a ScoreInput (preprocessed image tensor, caption, and the metadata row it came
with); a prediction is a PredictionResult whose `example` is that row (the tensor is dropped)
and whose `inference` is a ClipScore: the cosine similarity of the L2-normalised image and text
embeddings (a plain cosine in [-1, 1], not the x100 logit scale), plus both embeddings as
float16 for later dedupe, clustering or retrieval. Captions are tokenised with the model's own
open_clip tokenizer, a batch at a time.

The model is loaded once per worker process by `load_model` (RunInference keeps it in a
per-process shared handle); with `share_model_across_processes` one copy serves all processes of
a machine, which suits one big GPU model and several SDK processes. Batches are sized by the
config through `batch_elements_kwargs` (Beam's BatchElements). Inference runs under
`torch.inference_mode`, with autocast (fp16 or bf16) on CUDA only; the similarity itself is
always computed in float32.
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

# score.precision's choices (config_checks.SCORE_PRECISIONS, checked when the config loads).
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


class ScoreInput(NamedTuple):
    image: torch.Tensor               # the model's own preprocessing applied, CHW float32
    caption: str
    row: dict[str, Any]               # carried through to the PredictionResult


class ClipScore(NamedTuple):
    score: float                      # cosine similarity, float32 precision
    image_embedding: np.ndarray       # float16, L2-normalised
    text_embedding: np.ndarray        # float16, L2-normalised


@dataclass
class LoadedClip:
    model: Any
    tokenizer: Any
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


def model_label(model_name: str, weights: str) -> str:
    """What `clip_model` records: "ViT-B-32:openai", "witcurate-tiny:checkpoint.pt@sha256:<12 hex>"
    for a local checkpoint (its content, not where it lay, so the same data built elsewhere is
    byte-identical), or "ViT-B-32:random" for an untrained model."""
    if weights and fs.exists(weights):
        digest = hashlib.sha256()
        with fs.open_file(weights) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"{model_name}:{posixpath.basename(weights)}@sha256:{digest.hexdigest()[:12]}"
    return f"{model_name}:{weights or 'random'}"


class ClipScoreModelHandler(ModelHandler[ScoreInput, PredictionResult, LoadedClip]):
    """Scores ScoreInputs (image tensor, caption, row) with an open_clip model.

    `weights` is an open_clip pretrained tag ("openai") or a checkpoint path (local or gs://);
    empty means random init (benchmarks). `device` is auto|cpu|cuda[:N]; `precision`
    fp16|bf16|fp32 sets the CUDA autocast dtype (CPU always runs float32); `accelerator` is a
    Beam resource hint for the inference step (e.g. "type:nvidia-l4;count:1;install-nvidia-driver");
    `cpu_threads` caps torch's threads in the worker process when it runs on CPU. The values
    come from a checked config (witcurate.config_checks): precision one of PRECISIONS,
    1 <= min_batch_size <= max_batch_size.
    """

    def __init__(self, model_name: str, weights: str = "", *, device: str = "auto",
                 precision: str = "fp16", min_batch_size: int = 1, max_batch_size: int = 64,
                 share_model_across_processes: bool = False, accelerator: str = "",
                 cpu_threads: int | None = None):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         large_model=share_model_across_processes)
        self.model_name = model_name
        self.weights = weights
        self.device = device
        self.precision = precision
        self.accelerator = accelerator
        self.cpu_threads = cpu_threads

    @property
    def label(self) -> str:
        return model_label(self.model_name, self.weights)

    def load_model(self) -> LoadedClip:
        from witcurate.trainer.model import create_model, resolve_device
        device = resolve_device(self.device)
        if device.type == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        model, _, _, tokenizer = create_model(self.model_name, local_weights(self.weights), str(device))
        model.eval()
        dtype = PRECISIONS[self.precision] if device.type == "cuda" else None
        return LoadedClip(model, tokenizer, device, dtype)

    def run_inference(self, batch: Sequence[ScoreInput], model: LoadedClip,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        if not batch:
            return []
        images = torch.stack([ex.image for ex in batch])
        tokens = model.tokenizer([ex.caption for ex in batch])
        scores, image_emb, text_emb = score_batch(model, images, tokens)
        image16 = image_emb.to(torch.float16).cpu().numpy()
        text16 = text_emb.to(torch.float16).cpu().numpy()
        return [PredictionResult(ex.row, ClipScore(s, i, t), self.label)
                for ex, s, i, t in zip(batch, scores.cpu().tolist(), image16, text16)]

    def get_num_bytes(self, batch: Sequence[ScoreInput]) -> int:
        # The default pickles the whole batch just to count it; the tensors' size is enough.
        return sum(ex.image.element_size() * ex.image.nelement() + len(ex.caption) for ex in batch)

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
