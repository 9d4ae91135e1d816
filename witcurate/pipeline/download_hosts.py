"""What the download's hosts came to, counted in Beam for the manifest and the dataset card.

    kept rows, rejects, robots verdicts --CountHosts--> PREFIX*.jsonl:
        {"top": [[host, {outcome: n}], ...]}   the TOP_HOSTS hosts with the most URLs
        {"distinct": n}                         how many hosts the input named
        {"robots": {verdict: n}}                origins per robots.txt verdict

Counting is keyed by host (one small record per host), so a run over millions of hosts never
holds them all in one place; the driver reads the three lines back (read_host_counts).
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam

from witcurate.pipeline.beam_io import read_json_lines
from witcurate.pipeline.hosts import host_of, outcome_of, top_hosts

TOP_HOSTS = 20


def _reject_outcome(reject: dict[str, Any]) -> tuple[str, str]:
    try:
        url = json.loads(reject.get("record") or "{}").get("url")
    except (ValueError, AttributeError):
        url = None
    return host_of(url), outcome_of(reject.get("reason"))


def _merge(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


class CountHosts(beam.PTransform):
    """{"kept": rows, "rejects": rejects rows, "robots": (origin, verdict)} -> the lines above,
    written as PREFIX*.jsonl."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def expand(self, parts):
        outcomes = ((parts["kept"] | "KeptHost" >> beam.Map(lambda r: (host_of(r.get("url")), "fetched")),
                     parts["rejects"] | "RejectHost" >> beam.Map(_reject_outcome))
                    | "Outcomes" >> beam.Flatten())
        per_host = (outcomes
                    | "PerHostOutcome" >> beam.combiners.Count.PerElement()
                    | "ByHost" >> beam.MapTuple(lambda ho, n: (ho[0], {ho[1]: n}))
                    | "MergeHost" >> beam.CombinePerKey(_merge))
        top = (per_host
               | "TopHosts" >> beam.combiners.Top.Of(TOP_HOSTS, key=lambda hc: (sum(hc[1].values()), hc[0]))
               | "TopLine" >> beam.Map(lambda top: json.dumps({"top": top})))
        distinct = (per_host | "CountHosts" >> beam.combiners.Count.Globally()
                    | "DistinctLine" >> beam.Map(lambda n: json.dumps({"distinct": n})))
        robots = (parts["robots"]
                  | "Verdict" >> beam.MapTuple(lambda origin, record: (record["verdict"], 1))
                  | "PerVerdict" >> beam.CombinePerKey(sum)
                  | "AllVerdicts" >> beam.combiners.ToDict()
                  | "RobotsLine" >> beam.Map(lambda d: json.dumps({"robots": d})))
        return ((top, distinct, robots) | "HostLines" >> beam.Flatten()
                | "WriteHostLines" >> beam.io.WriteToText(self.prefix, file_name_suffix=".jsonl"))


def read_host_counts(prefix: str) -> dict[str, Any]:
    """{"distinct": hosts, "top": top_hosts rows, "robots": {verdict: origins}}."""
    found: dict[str, Any] = {"distinct": 0, "top": [], "robots": {}}
    for line in read_json_lines(prefix):
        if "top" in line:
            found["top"] = top_hosts([(h, c) for h, c in line["top"]], TOP_HOSTS)
        else:
            found.update(line)
    return found
