"""The stage runner: the data contracts of docs/ARCHITECTURE.md in one place.

A stage writes into a fresh temporary directory:
    TMP/part-*.parquet              kept records
    TMP/rejects/part-*.parquet      dropped records, with `reason` and `detail`
    TMP/...                         anything else it produces (images, queries.json, ...)
The runner then counts both from the files themselves, checks in = kept + rejected, writes
`_SUCCESS.json` and renames TMP to OUT/STAGE. A stage that produces a model instead of filtering
records (`produces = "model"`: scorer, train) has no records to balance: it writes its files
(checkpoint.pt, metrics.jsonl, ...) and the manifest lists them with their sizes instead. A killed run leaves only a TMP behind, which the
next attempt deletes; a stage whose manifest matches its config and inputs is skipped. Inputs
count by content: each manifest records a digest of what its stage holds (pipeline/content.py),
so a rerun upstream that lands the same rows and files redoes nothing after it.
Work that must survive a kill inside a stage (download shards) goes to `ctx.work_dir`, which is
kept across attempts and removed once the stage has landed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import witcurate
from witcurate import config_checks
from witcurate.config import Config
from witcurate.errors import AccountingError, InputError, UserError
from witcurate.pipeline import fs
from witcurate.pipeline.code_hash import code_hash
from witcurate.pipeline.content import MANIFEST, entry_for, stage_content
from witcurate.pipeline.tables import count_rows, open_parquet, parquet_files, reject_counts
from witcurate.schemas import validate

log = logging.getLogger("witcurate")

# What a stage produces (its `produces` attribute; records when it has none).
RECORDS = "records"                  # kept + rejected parquet parts, balanced against its input
MODEL = "model"                      # files (weights, metrics); no records to count


@dataclass
class StageContext:
    name: str
    config: Config
    out_root: str                    # the run directory, OUT
    tmp_dir: str                     # where the stage writes; renamed to OUT/STAGE on success
    work_dir: str                    # survives a killed attempt; removed after success
    inputs: dict[str, str]           # named inputs: "in" is the main one
    beam_args: list[str] = field(default_factory=list)
    progress: Callable[[str], None] = print
    row_counts: dict[str, int] = field(default_factory=dict)   # kept rows per input, once counted

    def input(self, name: str = "in") -> str:
        try:
            return self.inputs[name]
        except KeyError:
            raise InputError(f"stage {self.name} needs an input named {name!r}",
                             f"pass --{name.replace('_', '-')} DIR") from None

    def rows(self, name: str = "in") -> int:
        """Kept rows of an input stage directory, from its parts' footers (read once per run)."""
        if name not in self.row_counts:
            self.row_counts[name] = count_rows(self.input(name))
        return self.row_counts[name]


@dataclass
class StageResult:
    n_in: int | None = None          # None: the rows of inputs["in"]'s kept parquet
    extra: dict[str, Any] = field(default_factory=dict)   # merged into the manifest
    units: str = "records"           # what throughput counts
    kept_glob: str = "part-*.parquet"  # where the kept rows are (shards: one sidecar per tar)
    per_second: float | None = None  # the stage's own rate; None: n_in / wall seconds


class Stage(Protocol):
    name: str
    sections: tuple[str, ...]        # config sections that change this stage's output
    # optional: produces = MODEL for a stage that writes a model, not records;
    # content_skips: globs of its files left out of its content digest (pipeline/content.py);
    # reports_on: stages of the run whose manifests it reads (the dataset card)

    def run(self, ctx: StageContext) -> StageResult: ...


def check_finished_inputs(stage: Stage, inputs: dict[str, str]) -> dict[str, int]:
    """Each input that is a finished stage must still hold the rows its manifest counted; returns
    those counts by input name.

    One footer read per part: catches parts truncated, deleted or overwritten after the stage
    finished, before a pipeline starts on them, with the stage to redo named.
    """
    counted = {}
    for name, path in inputs.items():
        manifest = load_manifest(path) if "*" not in path else None
        if not manifest or "counts" not in manifest:
            continue
        upstream = manifest.get("stage", name)
        try:
            rows = count_rows(path, manifest.get("kept_glob", "part-*.parquet"))
        except InputError as e:
            raise InputError(f"stage {stage.name}: input {name}: {e.message}",
                             f"rerun the {upstream} stage with --force") from None
        if rows != manifest["counts"]["kept"]:
            raise InputError(f"stage {stage.name}: input {name} ({path}) holds {rows} rows but its "
                             f"manifest counted {manifest['counts']['kept']}",
                             f"its files changed after {upstream} finished: rerun {upstream} with --force")
        if manifest.get("kept_glob", "part-*.parquet") == "part-*.parquet":
            counted[name] = rows
    return counted


def check_input(stage: Stage, inputs: dict[str, str]) -> dict[str, int]:
    """The main input must exist and carry the columns the stage needs (stage.input_schema).
    Returns the kept rows of each finished-stage input (see check_finished_inputs)."""
    counted = check_finished_inputs(stage, inputs)
    schema = getattr(stage, "input_schema", None)
    path = inputs.get("in")
    if schema is None or path is None:
        return counted
    if not fs.exists(path):
        raise InputError(f"stage {stage.name}: input {path} does not exist",
                         "run the previous stage first, or point --in at its output directory")
    files = parquet_files(path)
    if not files:
        raise InputError(f"stage {stage.name}: {path} holds no part-*.parquet files",
                         "point --in at a finished stage directory")
    actual = open_parquet(files[0], footer_only=True).schema.to_arrow_schema()
    validate(schema, actual, f"stage {stage.name} input {files[0]}")
    return counted


def fingerprint_input(path: str) -> str:
    """An input by its content where a finished stage recorded it: a stage directory by the
    digest of what it holds, a file inside one by the digest of the entry that covers it (a
    model's weights: their sha256). Otherwise a stage directory whose manifest predates content
    digests by its fingerprint, and a glob or any other file by size and mtime."""
    if any(c in path for c in "*?["):
        return "glob:" + ",".join(f"{p}:{fs.size_and_mtime(p)}" for p in fs.glob(path))
    manifest = load_manifest(path)
    if manifest is not None:
        if "content" in manifest:
            return "content:" + manifest["content"]["hash"]
        return "stage:" + manifest["fingerprint"]
    if not fs.exists(path):
        return "missing"
    covered = _covered_file(path)
    if covered is not None:
        return covered
    size, mtime = fs.size_and_mtime(path)
    return f"file:{size}:{mtime}"


def _covered_file(path: str, levels: int = 3) -> str | None:
    """The digest a finished stage recorded for the file at `path` inside it, if any."""
    directory, rel = path.rstrip("/"), ""
    for _ in range(levels):
        directory, name = posixpath.split(directory)
        rel = posixpath.join(name, rel) if rel else name
        if not directory or directory.endswith(":"):
            return None
        manifest = load_manifest(directory)
        if manifest is not None:
            digest = manifest.get("content", {}).get("files", {}).get(entry_for(rel))
            return f"content:{entry_for(rel)}:{digest}" if digest else None
    return None


def run_reports(stage: Stage, out_root: str) -> dict[str, str]:
    """For a stage that reports on the run (`reports_on`: the shards stage's dataset card shows
    every stage's counts, times and config): which landing of each of those stages it read, so
    an upstream rerun rewrites the report even when the data it ships is unchanged."""
    reports = {}
    for name in getattr(stage, "reports_on", ()):
        manifest = load_manifest(fs.join(out_root, name)) if name != stage.name else None
        if manifest is not None:
            reports[name] = f"{manifest.get('fingerprint')}@{manifest.get('finished_at')}"
    return reports


def stage_fingerprint(stage: Stage, config: Config, inputs: dict[str, str], out_root: str = ".") -> str:
    payload = {
        "stage": stage.name,
        "config": config.section_hash(*stage.sections) if stage.sections else "",
        "code": witcurate.__version__,
        "code_hash": code_hash(type(stage).__module__),
        "inputs": {k: fingerprint_input(v) for k, v in sorted(inputs.items())},
    }
    if getattr(stage, "reports_on", ()):
        payload["reports_on"] = run_reports(stage, out_root)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def load_manifest(stage_dir: str) -> dict[str, Any] | None:
    path = fs.join(stage_dir, MANIFEST)
    return fs.read_json(path) if fs.exists(path) else None


def produces(stage: Stage) -> str:
    return getattr(stage, "produces", RECORDS)


def describe(manifest: dict[str, Any]) -> str:
    """One line for a finished stage: its counts, or the files of the model it produced."""
    if manifest.get("produces") == MODEL:
        return "model: " + ", ".join(sorted(manifest.get("outputs", {})))
    c = manifest["counts"]
    return f"in={c['in']} kept={c['kept']} rejected={c['rejected']}"


def run_stage(stage: Stage, config: Config, final_dir: str, inputs: dict[str, str],
              beam_args: list[str] | None = None, force: bool = False,
              progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one stage under the contracts into `final_dir` (OUT/STAGE in a full run)."""
    config_checks.validate(config, stages=(stage.name,))   # also a config built in code
    final_dir = fs.normalize(final_dir).rstrip("/")
    inputs = {k: fs.normalize(v) for k, v in inputs.items()}
    out_root = posixpath.dirname(final_dir) or "."
    base = posixpath.basename(final_dir)
    fingerprint = stage_fingerprint(stage, config, inputs, out_root)
    existing = load_manifest(final_dir)
    if existing and existing.get("fingerprint") == fingerprint and not force:
        progress(f"[{stage.name}] already done ({describe(existing)}), skipping")
        existing["skipped"] = True
        return existing

    counted = check_input(stage, inputs)
    tmp_dir = fs.join(out_root, f".tmp-{base}")
    work_dir = fs.join(out_root, f".work-{base}")
    fs.rm(tmp_dir)                     # a previous attempt's half-written output
    try:
        fs.makedirs(fs.join(tmp_dir, "rejects") if produces(stage) == RECORDS else tmp_dir)
        fs.makedirs(work_dir)
    except OSError as e:
        raise UserError(f"cannot write to {out_root}: {e.strerror or e}",
                        "choose an --out directory you can write to, with free space") from None
    ctx = StageContext(stage.name, config, out_root, tmp_dir, work_dir, dict(inputs),
                       list(beam_args or []), progress, counted)
    try:
        return _run_and_land(stage, ctx, final_dir, fingerprint)
    except Exception as e:
        full = _storage_full(e)
        if full is None:
            raise
        try:
            fs.rm(tmp_dir)                   # give the half-written output's space back now
        except OSError:
            pass
        raise UserError(f"stage {stage.name} ran out of space writing under {out_root}: {full}",
                        "free space or point --out at a larger disk, then rerun the same command: "
                        "finished stages and download shards are kept") from None


# Errors that mean "the output's storage is full or refuses writes", however deep a library
# (Beam, pyarrow, img2dataset) wrapped them: Beam re-raises worker errors as new exceptions
# whose message carries the original, so the text is checked as well as the cause chain.
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "File too large",
              "Read-only file system")


def _storage_full(exc: BaseException) -> str | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return exc.strerror or str(exc)
        text = str(exc)
        for phrase in _FULL_TEXT:
            if phrase in text:
                return phrase
        exc = exc.__cause__ or exc.__context__
    return None


def _run_and_land(stage: Stage, ctx: StageContext, final_dir: str, fingerprint: str) -> dict[str, Any]:
    """Run the stage into ctx.tmp_dir, check what it wrote, write its manifest, rename it."""
    tmp_dir, config = ctx.tmp_dir, ctx.config
    ctx.progress(f"[{stage.name}] running")
    start = time.time()
    result = stage.run(ctx) or StageResult()
    wall = time.time() - start
    output = _records_output(stage, ctx, result) if produces(stage) == RECORDS else _model_output(stage, ctx)
    output["content"] = _content(stage, ctx, output)
    rate = result.per_second
    if rate is None and "counts" in output and wall > 0:
        rate = round(output["counts"]["in"] / wall, 2)
    manifest = {
        "stage": stage.name,
        "produces": produces(stage),
        "fingerprint": fingerprint,
        "code_version": witcurate.__version__,
        "code_hash": code_hash(type(stage).__module__),
        "config_hash": config.section_hash(*stage.sections) if stage.sections else "",
        "config": {s: config.to_dict()[s.partition(".")[0]] for s in stage.sections},
        "inputs": {k: {"path": v, "fingerprint": fingerprint_input(v)} for k, v in ctx.inputs.items()},
        **output,
        "wall_seconds": round(wall, 3),
        "throughput": {"units": result.units, "per_second": rate},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **result.extra,
    }
    fs.write_json(fs.join(tmp_dir, MANIFEST), manifest)
    # Replacing an older output: its manifest goes first, so a kill in the middle of the delete
    # leaves a directory the next run redoes, never a half-deleted one that looks finished.
    fs.rm(fs.join(final_dir, MANIFEST))
    fs.rm(final_dir)
    fs.move(tmp_dir, final_dir)
    fs.rm(ctx.work_dir)
    reasons = manifest.get("counts", {}).get("reasons")
    ctx.progress(f"[{stage.name}] {describe(manifest)} ({wall:.1f}s, {rate} {result.units}/s)"
                 + (f" reasons: {reasons}" if reasons else ""))
    return manifest


def _records_output(stage: Stage, ctx: StageContext, result: StageResult) -> dict[str, Any]:
    """The counts of a record stage, from its files; it must balance: in = kept + rejected."""
    kept = count_rows(ctx.tmp_dir, result.kept_glob)
    reasons = reject_counts(ctx.tmp_dir)
    rejected = sum(reasons.values())
    n_in = result.n_in if result.n_in is not None else ctx.rows("in")
    if n_in != kept + rejected:
        raise AccountingError(
            f"stage {stage.name} does not balance: in={n_in} kept={kept} rejected={rejected}")
    return {"kept_glob": result.kept_glob,
            "counts": {"in": n_in, "kept": kept, "rejected": rejected, "reasons": reasons}}


def _content(stage: Stage, ctx: StageContext, output: dict[str, Any]) -> dict[str, Any]:
    """The digest of what the stage wrote (pipeline/content.py): what later stages' fingerprints
    name it by. Its count of kept rows, read from the data, must agree with the footers'."""
    content = stage_content(ctx.tmp_dir, output.get("kept_glob"), tuple(getattr(stage, "content_skips", ())))
    if "counts" in output and content["kept"]["rows"] != output["counts"]["kept"]:
        raise AccountingError(f"stage {stage.name}: its parts hold {content['kept']['rows']} rows "
                              f"but their footers count {output['counts']['kept']}")
    return content


def _model_output(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """The files a model stage wrote, with their sizes; a model stage that wrote none failed."""
    outputs = fs.files_under(ctx.tmp_dir)
    if not outputs:
        raise AccountingError(f"stage {stage.name} produces a model but wrote no files")
    return {"outputs": outputs}
