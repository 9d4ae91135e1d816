"""Range checks of configuration values, run when a config is loaded and again before each stage.

A value a stage cannot use (a batch size of 0, a threshold of 28 on a cosine scale, an unknown
resize mode) is a ConfigError naming the key, raised before any stage starts: a pure value check
never waits for the stage that reads the value. Checks that need more than the values (does a
file exist, is a CUDA device there) stay with the code that needs them.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from witcurate.errors import ConfigError
from witcurate.filters.urls import parse_allow_entry

# Choices, shared with the code that acts on them.
RESIZE_MODES = ("no", "keep_ratio", "center_crop", "border", "keep_ratio_largest")   # img2dataset's
ENCODE_FORMATS = ("jpg", "png", "webp")
SCORE_PRECISIONS = ("fp16", "bf16", "fp32")            # the keys of pipeline.inference.PRECISIONS
TARGET_FITS = ("pool", "input")                        # what pipeline.target fits its clusters on
TRAIN_PRECISIONS = ("amp", "amp_bf16", "amp_fp16", "fp32")

# section.key -> the smallest value it may take.
AT_LEAST: dict[str, float] = {
    "queries.min_unigram_count": 1, "queries.min_bigram_count": 1, "queries.min_title_views": 0,
    "queries.max_queries": 1, "queries.split_mb": 1,
    # per-source budgets: -1 means no budget, 0 leaves a source out
    "queries.max_unigrams": -1, "queries.max_bigrams": -1, "queries.max_titles": -1,
    "ingest.min_words": 0, "ingest.min_chars": 0, "ingest.max_chars": 1, "ingest.max_url_length": 1,
    "balance.per_query": 1,
    "download.image_size": 1, "download.urls_per_shard": 1, "download.processes_count": 1,
    "download.thread_count": 1, "download.timeout": 1, "download.max_pixels": 1,
    "download.min_side": 0, "download.retries": 0, "download.max_aspect_ratio": 1,
    "download.per_host_connections": 1, "download.per_host_delay": 0, "download.max_retry_after": 0,
    "download.rate_limit_retries": 0, "download.max_host_shards": 1,
    "dedupe.max_hamming": 0, "dedupe.bands": 1,
    "scorer.epochs": 1, "scorer.batch_size": 1, "scorer.warmup_steps": 0,
    "scorer.instance_weight": 0, "scorer.instance_views": 0,
    "score.batch_size": 1, "score.num_workers": 0,
    "cap.per_query": 1,
    "semdedup.clusters": 1, "semdedup.sample": 1, "semdedup.max_cluster_size": 2,
    "semdedup.niter": 1, "target.clusters": 1, "target.sample": 1, "target.niter": 1,
    "shards.samples_per_shard": 1,
    "train.epochs": 1, "train.batch_size": 1, "train.weight_decay": 0, "train.warmup_steps": 0,
    "train.grad_clip": 0, "train.checkpoint_every": 1, "train.keep_last_checkpoints": 0,
    "train.workers": 0, "train.log_every": 1,
    "demo.port": 1, "demo.pool_size": 1, "demo.trusted_size": 1, "demo.eval_size": 1,
    "demo.image_size": 1, "demo.trusted_named_off_target": 0,
}
# section.key -> the largest value it may take.
AT_MOST: dict[str, float] = {"dedupe.max_hamming": 63, "dedupe.bands": 64, "demo.port": 65535,
                             "demo.trusted_named_off_target": 0.5}
# Must be above zero (a rate or factor of 0 means nothing happens).
ABOVE_ZERO = ("balance.oversample", "scorer.lr", "scorer.instance_temperature", "train.lr")
ONE_OF: dict[str, tuple[str, ...]] = {
    "download.resize_mode": RESIZE_MODES, "download.encode_format": ENCODE_FORMATS,
    "score.precision": SCORE_PRECISIONS, "train.precision": TRAIN_PRECISIONS,
    "target.fit": TARGET_FITS,
}


def _value(config: Any, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(config, section), name)


def _bounds(config: Any, where: str) -> None:
    for key, low in AT_LEAST.items():
        value = _value(config, key)
        if not value >= low:                          # also catches NaN
            raise ConfigError(f"{where}: {key} must be at least {low:g}, got {value!r}",
                              "set a value in range")
    for key, high in AT_MOST.items():
        if _value(config, key) > high:
            raise ConfigError(f"{where}: {key} must be at most {high:g}, got {_value(config, key)!r}",
                              "set a value in range")
    for key in ABOVE_ZERO:
        if not _value(config, key) > 0:
            raise ConfigError(f"{where}: {key} must be above 0, got {_value(config, key)!r}",
                              "set a positive number")
    for key, choices in ONE_OF.items():
        if _value(config, key) not in choices:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(choices)}, "
                              f"got {_value(config, key)!r}", f"use one of {', '.join(choices)}")


KEEP_RULES = ("threshold", "top_fraction", "per_query_top_fraction")


def _score(score: Any, where: str, scoring: bool) -> None:
    """The keep rule (exactly one of threshold, top_fraction and per_query_top_fraction when the
    score stage runs) and the inference batch sizes."""
    if score.threshold is not None and (not math.isfinite(score.threshold)
                                        or not -1.0 <= score.threshold <= 1.0):
        raise ConfigError(f"{where}: score.threshold must be a cosine similarity in [-1, 1], "
                          f"got {score.threshold}", "scores are not x100: LAION's 28 is 0.28 here")
    for key in ("top_fraction", "per_query_top_fraction"):
        value = getattr(score, key)
        if value is not None and (not math.isfinite(value) or not 0.0 < value <= 1.0):
            raise ConfigError(f"{where}: score.{key} must be in (0, 1], got {value}", "e.g. 0.3 keeps the best 30%")
    rules_set = [k for k in KEEP_RULES if getattr(score, k) is not None]
    if len(rules_set) > 1 or (scoring and not rules_set):
        which = {0: "neither is set", 2: "both are set"}.get(len(rules_set), "all three are set")
        raise ConfigError(f"{where}: score: set exactly one of threshold and top_fraction "
                          f"(or per_query_top_fraction) ({which})",
                          "e.g. --threshold 0.28 (LAION, ViT-B/32) or --top-fraction 0.3 (DataComp)")
    low = score.min_batch_size
    if low is not None and not 1 <= low <= score.batch_size:
        raise ConfigError(f"{where}: score.min_batch_size must be between 1 and score.batch_size "
                          f"({score.batch_size}), got {low}", "or leave it unset (null)")
    if score.cpu_threads is not None and score.cpu_threads < 1:
        raise ConfigError(f"{where}: score.cpu_threads must be at least 1, got {score.cpu_threads}",
                          "or leave it unset (null): torch's default")


def _download(download: Any, where: str) -> None:
    for key in ("per_host_delay", "max_retry_after"):
        if not math.isfinite(getattr(download, key)):
            raise ConfigError(f"{where}: download.{key} must be a finite number of seconds, "
                              f"got {getattr(download, key)!r}", "set a value in range")
    if any(ord(c) < 32 or ord(c) == 127 for c in download.user_agent):
        raise ConfigError(f"{where}: download.user_agent holds a control character",
                          "it is sent as an HTTP header: one line of printable text")
    for entry in download.allow_private:
        try:
            parse_allow_entry(entry)
        except ValueError as e:
            raise ConfigError(f"{where}: download.allow_private: {e}",
                              'write entries as "host:port", "host" or a CIDR network like '
                              "127.0.0.0/8") from None


def _semantic(config: Any, where: str, stages: Iterable[str]) -> None:
    """The embedding steps: a cosine threshold, a sample that can fit the clusters, and a target
    set when the target filter runs."""
    dedup, target = config.semdedup, config.target
    if not (math.isfinite(dedup.threshold) and 0.0 < dedup.threshold <= 1.0):
        raise ConfigError(f"{where}: semdedup.threshold must be a cosine in (0, 1], got {dedup.threshold}",
                          "SemDeDup keeps pairs below 1 - eps, e.g. 0.95")
    for name, section in (("semdedup", dedup), ("target", target)):
        if section.sample < section.clusters:
            raise ConfigError(f"{where}: {name}.sample ({section.sample}) is below {name}.clusters "
                              f"({section.clusters})", "k-means needs at least one sampled embedding "
                              "per cluster: raise sample (about 40 per cluster fits well) or lower clusters")
    fraction = target.keep_fraction
    if fraction is not None and not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise ConfigError(f"{where}: target.keep_fraction must be in (0, 1], got {fraction}",
                          "or leave it unset (null): DataComp's nearest-centroid rule")
    if target.embeddings and target.images:
        raise ConfigError(f"{where}: target: set one of embeddings and images, not both",
                          "embeddings: a .npy or parquet of target image embeddings; images: a folder")
    if "target" in stages and target.enabled and not (target.embeddings or target.images):
        raise ConfigError(f"{where}: target.enabled is true but no target set is given",
                          "set target.embeddings (.npy / parquet) or target.images (a folder or "
                          "tar glob), or target.enabled=false")


def validate(config: Any, where: str = "config", stages: Iterable[str] = ()) -> None:
    """Raise a ConfigError for the first value out of range. `stages`: the stages about to run
    (the score stage needs a keep rule; other commands do not)."""
    _bounds(config, where)
    if config.ingest.max_chars < config.ingest.min_chars:
        raise ConfigError(f"{where}: ingest.max_chars ({config.ingest.max_chars}) is below "
                          f"ingest.min_chars ({config.ingest.min_chars})", "raise max_chars")
    _score(config.score, where, scoring="score" in stages)
    _semantic(config, where, tuple(stages))
    _download(config.download, where)
