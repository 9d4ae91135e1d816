"""Typed configuration: one dataclass section per stage, loaded from YAML plus `section.key=value`
overrides. Unknown keys, wrongly typed values and values out of range are errors that name the
key and the file, raised when the config is loaded: `witcurate run` fails before its first stage,
never hours later inside one. The range checks are `validate` (config_checks.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from witcurate import __version__
from witcurate.config_checks import validate
from witcurate.errors import ConfigError


@dataclass
class RunSection:
    out: str = "runs/demo"
    seed: int = 0
    # Stages `witcurate run` executes, in order. `scorer` and `train` are the demo's bootstrap
    # scorer and the final training run; drop them to stop at the shards.
    stages: list[str] = field(default_factory=lambda: [
        "queries", "ingest", "match", "balance", "download", "dedupe",
        "scorer", "score", "semdedup", "target", "cap", "shards", "train"])
    # Generate the demo world if missing and serve its image host during the run.
    demo: bool = False
    # Beam pipeline options passed to every stage (e.g. ["--runner=DataflowRunner", ...]).
    beam_args: list[str] = field(default_factory=list)


@dataclass
class QueriesSection:
    dumps: list[str] = field(default_factory=list)          # pages-articles*.xml.bz2 paths/globs
    pageviews: list[str] = field(default_factory=list)      # pageview file paths/globs
    import_json: str = ""                                    # MetaCLIP metadata.json instead of building
    # Floors, then per-source budgets (MetaCLIP's sizes; see witcurate/queries/budgets.py):
    # a source's entries that pass its floor, ranked, the first max_* admitted (-1: no budget).
    min_unigram_count: int = 100
    min_bigram_count: int = 30                               # bigrams seen fewer times get no PMI
    min_pmi: float | None = None                             # optional PMI floor (log2), none by default
    min_title_views: int = 70
    max_unigrams: int = 251_465                              # most frequent first
    max_bigrams: int = 100_646                               # highest PMI first
    max_titles: int = 61_235                                 # most viewed first
    wordnet: bool = True
    max_queries: int = 500_000
    pageview_projects: list[str] = field(default_factory=lambda: ["en", "en.m"])
    wordnet_dir: str = ""                                    # NLTK data dir holding corpora/wordnet
    split_mb: int = 64                                       # compressed MB of a multistream dump per worker split
    skip_bad_inputs: bool = False                            # corrupt dump splits / pageview files: fail, or skip and report


@dataclass
class IngestSection:
    sources: list[str] = field(default_factory=list)        # parquet/csv/tsv/jsonl/warc.wat.gz globs
    url_col: str = "url"
    caption_col: str = "caption"
    min_words: int = 2
    min_chars: int = 5
    max_chars: int = 1000
    max_url_length: int = 2048
    english_only: bool = False


@dataclass
class MatchSection:
    queries: str = ""            # queries.json or a queries stage dir; default: the run's queries


@dataclass
class BalanceSection:
    per_query: int = 20_000      # the cap the budget aims at (same as cap.per_query by default)
    oversample: float = 2.0
    enabled: bool = True


@dataclass
class DownloadSection:
    image_size: int = 256
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = True
    encode_format: str = "jpg"
    encode_quality: int = 95
    timeout: int = 10
    retries: int = 0
    processes_count: int = 2
    thread_count: int = 16
    urls_per_shard: int = 10_000
    # The product token robots.txt groups and X-Robots-Tag directives are matched against.
    user_agent_token: str = "witcurate"
    # Sent on every request (robots.txt and images), so a host knows who asks and where to read why.
    user_agent: str = f"witcurate/{__version__} (+https://github.com/witcurate/witcurate)"
    obey_robots: bool = True          # fetch each origin's robots.txt once and obey it (RFC 9309)
    per_host_connections: int = 2     # requests open to one host at once, per download shard
    per_host_delay: float = 0.0       # seconds between the starts of two requests to one host
    max_retry_after: float = 60.0     # the longest Retry-After waited out; longer: rate_limited
    rate_limit_retries: int = 3       # retries of a URL answered 429/503 before rate_limited
    max_host_shards: int = 4          # shards one host's URLs may be spread over
    disallowed_header_directives: list[str] = field(
        default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"])
    min_side: int = 64
    max_aspect_ratio: float = 3.0
    max_pixels: int = 89_478_485   # Pillow's own decompression-bomb limit
    # Hosts/networks allowed even though they are loopback/private (CIDR or host[:port]).
    allow_private: list[str] = field(default_factory=list)


@dataclass
class DedupeSection:
    max_hamming: int = 4
    # LSH bands over the 64 hash bits: bands >= max_hamming + 1 finds every pair (pigeonhole);
    # more bands than that only make buckets bigger and slower (8 bands = 8-bit buckets).
    bands: int = 5
    eval_images: str = ""        # folder of images: drop pool images that duplicate them


@dataclass
class ScorerSection:
    """The demo's bootstrap scorer: a small open_clip model trained on a trusted clean set."""
    trusted: str = ""            # webdataset tar glob of the trusted set
    model: str = "witcurate-tiny"
    # 5 epochs of 3,000 demo pairs: ~1 min on 2 shared CPU cores, and matched vs mismatched
    # captions separate with precision and recall above 0.98.
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 20
    device: str = "auto"
    # A self-supervised image term beside the CLIP loss (SLIP; trainer/instance.py), so that the
    # image embeddings tell apart scenes that the same caption describes: its weight (0 = plain
    # CLIP), how many images of a batch get a second view (0 = all), and its temperature.
    instance_weight: float = 0.0
    instance_views: int = 0
    instance_temperature: float = 0.1


@dataclass
class ScoreSection:
    model: str = "ViT-B-32"
    # open_clip tag, a local checkpoint path, or "run:scorer" (the run's scorer stage checkpoint)
    pretrained: str = "openai"
    # Exactly one keep rule: a cosine threshold (LAION: 0.28 for ViT-B/32; it depends on the
    # model, so none is assumed) or the top fraction by score (DataComp: 0.3).
    threshold: float | None = None
    top_fraction: float | None = None
    per_query_top_fraction: float | None = None   # keep the top fraction of each query's pairs
    batch_size: int = 64         # the largest inference batch
    min_batch_size: int | None = None   # still accepted and checked; decode now always makes whole batches of batch_size
    device: str = "auto"
    precision: str = "fp16"      # autocast dtype on CUDA: fp16, bf16 or fp32 (CPU runs fp32)
    share_model: bool = False    # one model copy per machine, shared by its worker processes
    num_workers: int = 2         # image decode threads per worker, running ahead of the model
    cpu_threads: int | None = None   # torch threads per worker process on CPU (None: torch's
                                     # default, all cores; 1 suits one SDK process per vCPU)
    accelerator: str = ""        # Dataflow: a GPU for the inference step only (Beam resource hint),
                                 # e.g. "type:nvidia-l4;count:1;install-nvidia-driver"


@dataclass
class SemdedupSection:
    """Semantic dedup (SemDeDup) on the score stage's image embeddings (docs/semantic.md)."""
    enabled: bool = True         # false: every pair passes (still counted)
    clusters: int = 1000         # k-means clusters; more than the pool is clamped, with a note
    sample: int = 100_000        # embeddings the k-means is fitted on: the only ones held together
    threshold: float = 0.95      # cosine at or above which two images are duplicates
    max_cluster_size: int = 50_000   # a cluster expected above this is split by a child k-means
    niter: int = 20              # k-means iterations
    seed: int = 0


@dataclass
class TargetSection:
    """The target-distribution filter (DataComp's image-based filter) on the same embeddings."""
    enabled: bool = False        # needs a target set: exactly one of the two below
    # Target image embeddings: a .npy (n, d) array, or a parquet file or folder of parquet parts
    # with an image_embedding (or embedding) column of lists or float16 bytes, from the scorer's model.
    embeddings: str = ""
    # Or target images (a folder of images and WebDataset tars, or a glob of tars), embedded by
    # the stage with the score stage's model and weights; "run:trusted" is scorer.trusted.
    images: str = ""
    clusters: int = 1000         # k-means clusters over the pool; more than the pool is clamped
    sample: int = 100_000        # embeddings the k-means is fitted on
    # What the clusters are fitted on: "pool", every image embedding the score stage saved (the
    # pairs it rejected too), as DataComp clusters its whole pool; or "input", the stage's own rows.
    fit: str = "pool"
    # None: DataComp's rule, keep the clusters that are some target embedding's nearest;
    # a fraction f: keep the ceil(f * clusters) clusters nearest to the target set.
    keep_fraction: float | None = None
    niter: int = 20
    seed: int = 0


@dataclass
class CapSection:
    per_query: int = 20_000


@dataclass
class ShardsSection:
    samples_per_shard: int = 10_000


@dataclass
class TrainSection:
    data: str = ""               # webdataset shard glob/brace pattern; default: the run's shards
    model: str = "witcurate-tiny"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    keep_last_checkpoints: int = 2   # checkpoints/step_N.pt kept, oldest deleted first; 0 = all
    eval_dir: str = ""           # zero-shot/retrieval eval set
    device: str = "auto"
    workers: int = 1
    precision: str = "amp"       # amp | amp_bf16 | amp_fp16 | fp32 (AMP on CUDA only; CPU trains fp32)
    log_every: int = 10          # steps between metrics.jsonl lines


@dataclass
class DemoSection:
    root: str = "demo_world"
    host: str = "127.0.0.1"
    port: int = 18080
    pool_size: int = 3000
    trusted_size: int = 3000
    # The share of the trusted pairs that are banners, charts, logos and screenshots captioned
    # as what they are (trusted/named-*.tar); the rest are scenes (trusted/trusted-*.tar).
    trusted_named_off_target: float = 0.1
    eval_size: int = 400
    image_size: int = 96
    seed: int = 0


@dataclass
class Config:
    run: RunSection = field(default_factory=RunSection)
    queries: QueriesSection = field(default_factory=QueriesSection)
    ingest: IngestSection = field(default_factory=IngestSection)
    match: MatchSection = field(default_factory=MatchSection)
    balance: BalanceSection = field(default_factory=BalanceSection)
    download: DownloadSection = field(default_factory=DownloadSection)
    dedupe: DedupeSection = field(default_factory=DedupeSection)
    scorer: ScorerSection = field(default_factory=ScorerSection)
    score: ScoreSection = field(default_factory=ScoreSection)
    semdedup: SemdedupSection = field(default_factory=SemdedupSection)
    target: TargetSection = field(default_factory=TargetSection)
    cap: CapSection = field(default_factory=CapSection)
    shards: ShardsSection = field(default_factory=ShardsSection)
    train: TrainSection = field(default_factory=TrainSection)
    demo: DemoSection = field(default_factory=DemoSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *names: str) -> str:
        """Hash of the named sections only: changing the trainer must not redo the download."""
        payload = {}
        for n in names:  # "section" or "section.key"
            section, _, key = n.partition(".")
            value = dataclasses.asdict(getattr(self, section))
            payload[n] = value[key] if key else value
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if isinstance(value, str):
            value = [value] if value else []
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}", "write it as [a, b] in YAML")
        return [_coerce(v, args[0], where) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}", "use true or false")
    if typ in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}", "use a number")
        try:
            out = typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}", "use a number") from None
        if typ is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}", "use a whole number")
        return out
    if typ is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}", "use a plain value")
        return "" if value is None else str(value)
    return value


def _section(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}", "see configs/demo.yaml")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}",
                              f"known keys: {', '.join(sorted(known))}")
    obj = cls()
    for key, value in data.items():
        setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}"))
    return obj


def from_dict(data: dict[str, Any], where: str = "config") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections", "see configs/demo.yaml")
    hints = typing.get_type_hints(Config)
    sections = {}
    for name, value in data.items():
        if name not in hints:
            raise ConfigError(f"{where}: unknown section {name!r}",
                              f"known sections: {', '.join(hints)}")
        sections[name] = _section(hints[name], value or {}, f"{where}: {name}")
    return Config(**sections)


def parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"bad override {text!r}", "write overrides as section.key=value")
    key, raw = text.split("=", 1)
    section, name = key.split(".", 1)
    return section, name, yaml.safe_load(raw) if raw != "" else ""


def load_config(path: str | None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> Config:
    """YAML file, then `section.key=value` overrides (YAML-parsed), then `values`: already typed
    values keyed "section.key" (from command-line flags: a glob like '*.gz' stays a string)."""
    data: dict[str, Any] = {}
    where = "config"
    if path:
        where = path
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}", "pass --config configs/demo.yaml") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}",
                              "fix the YAML syntax") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections",
                              "see configs/demo.yaml")
    pairs = [parse_override(text) for text in overrides or []]
    pairs += [(*key.split(".", 1), value) for key, value in (values or {}).items()]
    for section, name, value in pairs:
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            data[section] = {}
        data[section][name] = value
    config = from_dict(data, where)
    validate(config, where)
    return config
