"""Audit a finished run: recount every stage from its files, check the accounting and the chain.

A record stage must hold the rows its manifest counted and balance (in = kept + rejected); a
stage that produced a model must still hold every file its manifest listed, at the same size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from witcurate.errors import InputError
from witcurate.pipeline import fs
from witcurate.pipeline.runner import MANIFEST, MODEL, describe, fingerprint_input
from witcurate.pipeline.tables import count_rows, reject_counts
from witcurate.pipeline.stages import ORDER


@dataclass
class StageAudit:
    stage: str
    manifest: dict[str, Any]
    kept_files: int
    rejected_files: int
    problems: list[str] = field(default_factory=list)


def audit_stage(stage_dir: str) -> StageAudit:
    manifest = fs.read_json(fs.join(stage_dir, MANIFEST))
    name = manifest.get("stage", fs.join(stage_dir).rsplit("/", 1)[-1])
    audit = audit_model(stage_dir, name, manifest) if manifest.get("produces") == MODEL \
        else audit_records(stage_dir, name, manifest)
    audit.problems += changed_inputs(manifest)
    return audit


def audit_model(stage_dir: str, name: str, manifest: dict[str, Any]) -> StageAudit:
    audit = StageAudit(name, manifest, 0, 0)
    now = fs.files_under(stage_dir)
    for path, size in manifest.get("outputs", {}).items():
        if path not in now:
            audit.problems.append(f"{path} is missing")
        elif now[path] != size:
            audit.problems.append(f"{path} is {now[path]} bytes, the manifest says {size}")
    return audit


def audit_records(stage_dir: str, name: str, manifest: dict[str, Any]) -> StageAudit:
    counts = manifest.get("counts", {})
    try:
        kept = count_rows(stage_dir, manifest.get("kept_glob", "part-*.parquet"))
        reasons = reject_counts(stage_dir)
    except InputError as e:                      # a damaged part: nothing below can be trusted
        return StageAudit(name, manifest, 0, 0, [e.message])
    rejected = sum(reasons.values())
    audit = StageAudit(name, manifest, kept, rejected)
    if kept != counts.get("kept"):
        audit.problems.append(f"manifest says kept={counts.get('kept')}, files hold {kept}")
    if rejected != counts.get("rejected"):
        audit.problems.append(f"manifest says rejected={counts.get('rejected')}, files hold {rejected}")
    if reasons != counts.get("reasons", {}):
        audit.problems.append("reject reasons differ from the manifest")
    if counts.get("in") != kept + rejected:
        audit.problems.append(f"does not balance: in={counts.get('in')} != kept+rejected={kept + rejected}")
    return audit


def changed_inputs(manifest: dict[str, Any]) -> list[str]:
    """Inputs that were finished stages (or files inside one) whose content changed since: rerun
    with different results. A rerun that landed the same content is no problem."""
    problems = []
    for key, entry in manifest.get("inputs", {}).items():
        path = entry.get("path", "")
        if entry.get("fingerprint", "").startswith(("stage:", "content:")) and fs.exists(path):
            if fingerprint_input(path) != entry["fingerprint"]:
                problems.append(f"input {key} ({path}) changed since this stage ran: rerun it")
    return problems


def audit_run(out_root: str) -> list[StageAudit]:
    """Every finished stage directory under `out_root`, in pipeline order."""
    names = [m.rstrip("/").rsplit("/", 2)[-2] for m in fs.glob(fs.join(out_root, "*", MANIFEST))]
    order = {n: i for i, n in enumerate(ORDER)}
    names.sort(key=lambda n: (order.get(n, len(order)), n))
    return [audit_stage(fs.join(out_root, n)) for n in names]


def format_table(audits: list[StageAudit]) -> str:
    header = f"{'stage':<9} {'in':>8} {'kept':>8} {'rejected':>8} {'seconds':>8} {'rate/s':>9}  status / top reject reasons"
    lines = [header, "-" * len(header)]
    for a in audits:
        c = a.manifest.get("counts", {})
        rate = a.manifest.get("throughput", {}).get("per_second")
        if a.manifest.get("produces") == MODEL:
            notes = describe(a.manifest)       # no records: the files it produced
        else:
            notes = ", ".join(f"{k} {v}" for k, v in list(c.get("reasons", {}).items())[:4])
        status = "PROBLEM: " + "; ".join(a.problems) if a.problems else ("ok" + (f"  {notes}" if notes else ""))
        lines.append(f"{a.stage:<9} {c.get('in', '-'):>8} {c.get('kept', '-'):>8} {c.get('rejected', '-'):>8} "
                     f"{a.manifest.get('wall_seconds', 0):>8.1f} {rate if rate is not None else '-':>9}  {status}")
    return "\n".join(lines)
