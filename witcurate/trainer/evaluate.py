"""Zero-shot classification and image/text retrieval, the two evaluations CLIP papers report.

An eval dir holds either or both of:
    zeroshot/<class>/*.jpg, zeroshot/classnames.json, zeroshot/templates.json
    retrieval-*.tar                      WebDataset held-out pairs (KEY.jpg, KEY.txt)
`classnames.json` is a list of class names (folder names are the class names) or a mapping
{folder: class name}; `templates.json` is a list of prompts with `{}` (or `{c}`) for the name.

Any object with `encode_image(images)` and `encode_text(tokens)` can be evaluated, so the
metrics are checked against encoders whose right answers are known.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from witcurate.errors import InputError
from witcurate.pipeline import fs
from witcurate.trainer.data import IMAGE_EXTS, IMAGE_KEY, TEXT_EXT, skip_bad_sample, tar_samples

log = logging.getLogger("witcurate.trainer")

DEFAULT_TEMPLATES = ["a photo of a {}."]
RECALL_AT = (1, 5, 10)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def fill_template(template: str, classname: str) -> str:
    return template.replace("{c}", classname).replace("{classname}", classname).replace("{}", classname)


@torch.no_grad()
def encode_texts(model: Any, tokenizer: Callable, texts: Sequence[str], device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[i:i + batch_size])).to(device)
        with _autocast(device):
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def encode_images(model: Any, images: Sequence[torch.Tensor], device: torch.device,
                  batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        batch = torch.stack(list(images[i:i + batch_size])).to(device)
        with _autocast(device):
            out.append(F.normalize(model.encode_image(batch).float(), dim=-1))
    return torch.cat(out) if out else torch.empty(0)


def zero_shot_classifier(model: Any, tokenizer: Callable, classnames: Sequence[str],
                         templates: Sequence[str], device: torch.device) -> torch.Tensor:
    """(classes, dim): per class, the mean of its normalised prompt embeddings, renormalised."""
    prompts = [fill_template(t, c) for c in classnames for t in templates]
    emb = encode_texts(model, tokenizer, prompts, device).view(len(classnames), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose label is among the k highest logits (k capped at the class count)."""
    out = {}
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        out[f"top{k}"] = float((top == labels[:, None]).any(dim=1).float().mean()) if len(labels) else 0.0
    return out


def read_zeroshot_dir(root: str) -> tuple[list[str], list[str], list[tuple[str, int]]]:
    """(classnames, templates, [(image path, label)]) of a zero-shot folder (local or gs://...)."""
    folders = [d for d in fs.listdir(root) if fs.isdir(fs.join(root, d))]
    names_path = fs.join(root, "classnames.json")
    if fs.exists(names_path):
        names = fs.read_json(names_path)
        if isinstance(names, dict):
            folder_of = list(names.keys())
            classnames = [str(v) for v in names.values()]
        else:
            classnames = [str(v) for v in names]
            folder_of = classnames
    else:
        folder_of = classnames = folders
    templates_path = fs.join(root, "templates.json")
    templates = DEFAULT_TEMPLATES
    if fs.exists(templates_path):
        templates = [str(t) for t in fs.read_json(templates_path)] or DEFAULT_TEMPLATES
    items = []
    for label, folder in enumerate(folder_of):
        d = fs.join(root, folder)
        if not fs.isdir(d):
            raise InputError(f"zero-shot class {folder!r} has no folder in {root}",
                             "make classnames.json match the class folders")
        for name in fs.listdir(d):
            if name.lower().rsplit(".", 1)[-1] in IMAGE_EXTS:
                items.append((fs.join(d, name), label))
    return classnames, templates, items


def zero_shot(model: Any, preprocess: Callable, tokenizer: Callable, root: str,
              device: torch.device) -> dict[str, Any]:
    classnames, templates, items = read_zeroshot_dir(root)
    images, labels, bad = [], [], 0
    for path, label in items:
        try:
            with fs.open_file(path) as f, Image.open(f) as im:
                images.append(preprocess(im))
            labels.append(label)
        except Exception as e:  # a broken eval image is reported, not fatal
            bad += 1
            log.warning("zero-shot: cannot read %s: %s", path, e)
    if not images:
        raise InputError(f"no readable images in {root}", "put <class>/*.jpg folders there")
    classifier = zero_shot_classifier(model, tokenizer, classnames, templates, device)
    feats = encode_images(model, images, device)
    logits = feats @ classifier.T
    acc = topk_accuracy(logits.cpu(), torch.tensor(labels))
    return {**acc, "n": len(labels), "classes": len(classnames), "templates": len(templates),
            "unreadable": bad}


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor,
                      captions: Sequence[str] | None = None, ks: Sequence[int] = RECALL_AT) -> dict[str, float]:
    """Recall@k both ways for aligned pairs (row i of each is pair i).

    A retrieved item counts as correct if it is the pair's own or carries the identical caption
    (duplicated captions are equally right answers). Ties with a wrong item count against the
    query, so an encoder that maps everything to one point scores ~0, not 1.
    """
    sim = image_features.float() @ text_features.float().T
    n = sim.shape[0]
    positive = torch.eye(n, dtype=torch.bool)
    if captions is not None:
        index: dict[str, int] = {}
        ids = torch.tensor([index.setdefault(c, len(index)) for c in captions])
        positive |= ids[:, None] == ids[None, :]
    out: dict[str, float] = {}
    for direction, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        best_pos = s.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
        rank = ((s >= best_pos) & ~positive).sum(dim=1)      # wrong items at or above the best right one
        for k in ks:
            out[f"{direction}_R@{k}"] = float((rank < k).float().mean()) if n else 0.0
    return out


def read_retrieval_pairs(urls: list[str], preprocess: Callable) -> tuple[list[torch.Tensor], list[str]]:
    import webdataset as wds
    ds = wds.DataPipeline(
        wds.SimpleShardList(list(urls)),
        *tar_samples(),
        wds.decode("pil", handler=skip_bad_sample),
        wds.to_tuple(IMAGE_KEY, TEXT_EXT, handler=skip_bad_sample),
        wds.map_tuple(preprocess, str.strip, handler=skip_bad_sample))
    images, captions = [], []
    for image, text in ds:
        images.append(image)
        captions.append(text)
    return images, captions


def retrieval(model: Any, preprocess: Callable, tokenizer: Callable, urls: list[str],
              device: torch.device) -> dict[str, Any]:
    images, captions = read_retrieval_pairs(urls, preprocess)
    if not images:
        raise InputError(f"no readable pairs in {', '.join(urls)}", "retrieval tars hold KEY.jpg + KEY.txt")
    img = encode_images(model, images, device)
    txt = encode_texts(model, tokenizer, captions, device)
    return {**retrieval_metrics(img.cpu(), txt.cpu(), captions), "n": len(images),
            "unique_captions": len(set(captions))}


def evaluate(model: Any, preprocess: Callable, tokenizer: Callable, eval_dir: str,
             device: str | torch.device = "cpu") -> dict[str, Any]:
    """{"zeroshot": {top1, top5, n, classes, ...}, "retrieval": {image_to_text_R@1, ..., n}}
    for whichever of the two the eval dir holds (`eval_dir` may also be a zero-shot folder)."""
    device = torch.device(device)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    results: dict[str, Any] = {}
    zs_root = fs.join(eval_dir, "zeroshot")
    if not fs.isdir(zs_root) and fs.exists(fs.join(eval_dir, "classnames.json")):
        zs_root = eval_dir
    if fs.isdir(zs_root):
        results["zeroshot"] = zero_shot(model, preprocess, tokenizer, zs_root, device)
    tars = fs.glob(fs.join(eval_dir, "retrieval-*.tar"))
    if tars:
        results["retrieval"] = retrieval(model, preprocess, tokenizer, tars, device)
    if not results:
        raise InputError(f"nothing to evaluate in {eval_dir}",
                         "it should hold zeroshot/<class>/*.jpg and/or retrieval-*.tar")
    if was_training and hasattr(model, "train"):
        model.train()
    return results
