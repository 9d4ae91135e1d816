"""Score a finished demo run against the world's ground truth (which the pipeline never reads).

Every pool URL is traced to its fate: the stage and reason that dropped it, or the final shards.
Each injected download fault is checked against the reason it must get (faults.py), and the image
host's request log, when the run kept one, against the manners asked of the crawler (robots.txt,
connections at once, throttling, the User-Agent). The CLIP filter is judged on what reached it: a pair whose caption does not describe its image
(`mismatched`, or `junk` alt text that got that far) should be rejected, everything else kept.
The embedding stages (semdedup, target) are judged, with their curves, in semantic_truth.py.
"""

from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from witcurate.demo.faults import EXPECTED_DOWNLOAD_REASON
from witcurate.demo.host_log import politeness, read_log
from witcurate.demo.semantic_truth import Truth, semdedup_quality, target_quality
from witcurate.pipeline import fs
from witcurate.pipeline.tables import parquet_files, read_table
from witcurate.pipeline.stages import ORDER

BAD_FOR_CLIP = frozenset({"mismatched", "junk"})
HOST_LOG = "demo_host_log.jsonl"          # the image host's request log, beside the run


def _reject_rows(stage_dir: str):
    for path in parquet_files(fs.join(stage_dir, "rejects")):
        with fs.open_file(path) as f:
            table = pq.read_table(f, columns=["reason", "record"])
        for reason, record in zip(table.column("reason").to_pylist(), table.column("record").to_pylist()):
            yield reason, json.loads(record)


def trace_fates(out_root: str) -> dict[str, str]:
    """url -> "stage:reason" where it was dropped, or "shards" if it shipped."""
    fates: dict[str, str] = {}
    for stage in ORDER:
        stage_dir = fs.join(out_root, stage)
        if not fs.exists(fs.join(stage_dir, "_SUCCESS.json")):
            continue
        for reason, record in _reject_rows(stage_dir):
            url = record.get("url")
            if url and url not in fates:
                fates[url] = f"{stage}:{reason}"
    for path in parquet_files(fs.join(out_root, "shards"), "[0-9]*.parquet"):
        with fs.open_file(path) as f:
            for url in pq.read_table(f, columns=["url"]).column("url").to_pylist():
                fates.setdefault(url, "shards")
    return fates


def clip_filter_quality(out_root: str, kinds: dict[str, str]) -> dict[str, Any] | None:
    """Precision/recall of the CLIP-score filter against captions that do not fit their image."""
    score_dir = fs.join(out_root, "score")
    if not fs.exists(fs.join(score_dir, "_SUCCESS.json")):
        return None
    scores, urls, rejected = [], [], []
    kept = read_table(score_dir, columns=["url", "clip_score"])
    if kept is not None:
        for url, s in zip(kept.column("url").to_pylist(), kept.column("clip_score").to_pylist()):
            scores.append(s), urls.append(url), rejected.append(False)
    for reason, record in _reject_rows(score_dir):
        if reason == "clip_score_below" and record.get("clip_score") is not None:
            scores.append(record["clip_score"]), urls.append(record.get("url")), rejected.append(True)
    bad = [kinds.get(u) in BAD_FOR_CLIP for u in urls]
    if not scores:
        return None
    scores_a, bad_a, rej_a = np.array(scores, float), np.array(bad), np.array(rejected)
    threshold = fs.read_json(fs.join(score_dir, "_SUCCESS.json")).get("threshold_used")
    # Precision is against mismatched and junk captions only: an off-target image it rejects
    # counts against it, though rejecting one is right. What the filter costs is clean pairs.
    clean = np.array([kinds.get(u) == "clean" for u in urls])
    curve = []
    for t in np.linspace(scores_a.min(), scores_a.max(), 61):
        drop = scores_a < t
        curve.append({"threshold": float(t), **_pr(drop, bad_a)})
    return {"pairs_scored": len(scores), "bad_pairs": int(bad_a.sum()), "threshold": threshold,
            "clean_scored": int(clean.sum()), "clean_rejected": int((clean & rej_a).sum()),
            **_pr(rej_a, bad_a), "curve": curve}


def _pr(dropped: np.ndarray, bad: np.ndarray) -> dict[str, float]:
    tp = int((dropped & bad).sum())
    precision = tp / int(dropped.sum()) if dropped.any() else 1.0
    recall = tp / int(bad.sum()) if bad.any() else 1.0
    return {"precision": round(precision, 4), "recall": round(recall, 4)}


def download_faults(kinds: dict[str, str], fates: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per injected fault kind: the reason the download stage must give it, how many of its URLs
    got it, how many never reached the download (dropped before), and any other fates."""
    before = {f"{stage}:" for stage in ORDER[:ORDER.index("download")]}
    table: dict[str, dict[str, Any]] = {}
    for url, kind in kinds.items():
        if kind not in EXPECTED_DOWNLOAD_REASON:
            continue
        expected = EXPECTED_DOWNLOAD_REASON[kind]
        row = table.setdefault(kind, {"expected": expected or "kept", "as_expected": 0,
                                      "before_download": 0, "otherwise": {}})
        fate = fates.get(url, "unaccounted")
        if any(fate.startswith(b) for b in before):
            row["before_download"] += 1
        elif (fate == f"download:{expected}") if expected else not fate.startswith("download:"):
            row["as_expected"] += 1
        else:
            row["otherwise"][fate] = row["otherwise"].get(fate, 0) + 1
    return dict(sorted(table.items()))


def host_politeness(out_root: str, demo_root: str) -> dict[str, Any] | None:
    """What the image host's request log (HOST_LOG beside the run) says of the crawler's manners."""
    log = fs.join(out_root, HOST_LOG)
    if not fs.exists(log):
        return None
    hosts = fs.read_json(fs.join(demo_root, "host.json")).get("hosts") or []
    return politeness(read_log(log), hosts)


def evaluate_run(out_root: str, demo_root: str) -> dict[str, Any]:
    with fs.open_file(fs.join(demo_root, "truth", "truth.parquet")) as f:
        truth = pq.read_table(f, columns=["url", "kind", "dup_of"]).to_pylist()
    kinds = {r["url"]: r["kind"] for r in truth}
    fates = trace_fates(out_root)
    judged = Truth(truth)
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for url, kind in kinds.items():
        table[kind][fates.get(url, "unaccounted")] += 1
    shipped = [kinds[u] for u, f in fates.items() if f == "shards" and u in kinds]
    return {
        "fates": {k: dict(v.most_common()) for k, v in sorted(table.items())},
        "download_faults": download_faults(kinds, fates),
        "politeness": host_politeness(out_root, demo_root),
        "unaccounted": sum(v["unaccounted"] for v in table.values()),
        "shipped": len(shipped),
        "shipped_bad_captions": sum(k in BAD_FOR_CLIP for k in shipped),
        "clip_filter": clip_filter_quality(out_root, kinds),
        "semantic_duplicates_past_dedupe": _past_dedupe(table.get("semantic_dup")),
        "off_target_past_score": _past_score(table.get("off_target")),
        "semdedup": semdedup_quality(out_root, judged),
        "target": target_quality(out_root, judged),
    }


def _past_dedupe(fates: collections.Counter | None) -> dict[str, int] | None:
    """How many semantic duplicates the download kept, and how many the pHash dedupe caught."""
    if not fates:
        return None
    before = ("ingest", "match", "balance", "download")
    downloaded = sum(n for f, n in fates.items() if not f.startswith(before))
    return {"downloaded": downloaded, "caught_by_dedupe": sum(n for f, n in fates.items() if f.startswith("dedupe:"))}


def _past_score(fates: collections.Counter | None) -> dict[str, int] | None:
    """How many off-target pairs the CLIP score judged, and how many it let through."""
    if not fates:
        return None
    before = ("ingest", "match", "balance", "download", "dedupe")
    scored = sum(n for f, n in fates.items() if not f.startswith(before))
    return {"scored": scored, "passed": scored - sum(n for f, n in fates.items() if f.startswith("score:"))}


def format_report(report: dict[str, Any]) -> str:
    lines = ["demo ground truth: where each injected kind ended"]
    for kind, fates in report["fates"].items():
        lines.append(f"  {kind:<17} " + ", ".join(f"{f} {n}" for f, n in fates.items()))
    faults = report.get("download_faults") or {}
    wrong = {k: r["otherwise"] for k, r in faults.items() if r["otherwise"]}
    lines.append(f"download faults: {len(faults) - len(wrong)} of {len(faults)} kinds end with their "
                 "expected reason" + (f"; otherwise: {wrong}" if wrong else ""))
    lines += format_politeness(report.get("politeness"))
    clip = report.get("clip_filter")
    if clip:
        lines.append(f"CLIP filter at threshold {clip['threshold']}: precision {clip['precision']:.3f}, "
                     f"recall {clip['recall']:.3f} against mismatched/junk captions "
                     f"({clip['bad_pairs']} of {clip['pairs_scored']} scored pairs); "
                     f"{clip.get('clean_rejected', 0)} of {clip.get('clean_scored', 0)} clean pairs rejected")
    lines += _embedding_lines(report)
    lines.append(f"shipped {report['shipped']} pairs, {report['shipped_bad_captions']} with a caption "
                 f"that does not fit the image; {report['unaccounted']} pool URLs unaccounted for")
    return "\n".join(lines)


def format_politeness(polite: dict[str, Any] | None) -> list[str]:
    if not polite:
        return []
    lines = ["image host log: requests, robots.txt, refused paths asked for, 429/503, peak at once"]
    for name, r in polite["hosts"].items():
        lines.append(f"  {name:<17} {r['requests']:>5} {r['robots_txt']:>3} {r['refused_paths']:>3} "
                     f"{r['throttled']:>4} {r['peak']:>3}")
    agents = ", ".join(f"{ua!r} {n}" for ua, n in polite["user_agents"].items())
    return lines + [f"  user agents: {agents}"]


def plot_pr_curve(clip: dict[str, Any]):
    """Precision and recall of the CLIP filter over thresholds, the chosen one marked (a figure)."""
    from witcurate.pipeline.card import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ts = [c["threshold"] for c in clip["curve"]]
    ax.plot(ts, [c["precision"] for c in clip["curve"]], label="precision", color="tab:blue")
    ax.plot(ts, [c["recall"] for c in clip["curve"]], label="recall", color="tab:orange")
    if clip.get("threshold") is not None:
        ax.axvline(clip["threshold"], color="black", linestyle="--", linewidth=1,
                   label=f"threshold {clip['threshold']:.2f}")
    ax.set_xlabel("CLIP-score threshold (reject below)")
    ax.set_ylabel("against mismatched / junk captions")
    ax.set_ylim(0, 1.02)
    ax.set_title("CLIP filter quality on the demo's ground truth")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def _embedding_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    past, off = report.get("semantic_duplicates_past_dedupe"), report.get("off_target_past_score")
    if past:
        lines.append(f"pHash dedupe caught {past['caught_by_dedupe']} of the {past['downloaded']} semantic "
                     f"duplicates downloaded")
    if off:
        lines.append(f"CLIP score let {off['passed']} of {off['scored']} scored off-target pairs through")
    sd = report.get("semdedup")
    if sd:
        lines.append(f"semdedup at cosine {sd['threshold']}: recall {sd['recall']:.3f} of semantic "
                     f"duplicates ({sd['right']} of {sd['possible']}), {sd['clean_removed_share']:.1%} of clean "
                     f"pairs removed ({sd['clean_removed']} of {sd['clean_at_stage']})")
    tg = report.get("target")
    if tg:
        rule = "DataComp's rule" if tg["keep_fraction"] is None else f"keep_fraction {tg['keep_fraction']}"
        lines.append(f"target filter ({tg['clusters_kept']} of {tg['clusters']} clusters kept, {rule}): "
                     f"recall {tg['recall']:.3f} of off-target pairs ({tg['off_target_removed']} of "
                     f"{tg['off_target_at_stage']}), {tg['clean_removed_share']:.1%} of clean pairs removed "
                     f"({tg['clean_removed']} of {tg['clean_at_stage']})")
    return lines
