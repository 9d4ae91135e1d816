"""What the download's hosts came to, counted in Beam for the manifest and the dataset card.

    kept rows, rejects, robots verdicts --CountHosts--> two JSON lines, written as PREFIX*.jsonl:
        {"top": [[host, {outcome: n}], ...],    the TOP_HOSTS hosts with the most URLs,
         "distinct": n}                         and how many hosts the input named
        {"robots": {verdict: n}}                origins per robots.txt verdict

Counting is keyed by host (one small record per host), so a run over millions of hosts never
holds them all in one place; the driver reads the lines back (read_host_counts).
"""

from __future__ import annotations

import heapq
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


class _Tally(beam.CombineFn):
    """values -> {value: how many}."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, acc: dict[str, int], value: str) -> dict[str, int]:
        acc[value] = acc.get(value, 0) + 1
        return acc

    def merge_accumulators(self, accs) -> dict[str, int]:
        total: dict[str, int] = {}
        for acc in accs:
            for k, v in acc.items():
                total[k] = total.get(k, 0) + v
        return total

    def extract_output(self, acc: dict[str, int]) -> dict[str, int]:
        return acc


class _TopAndDistinct(beam.CombineFn):
    """(host, {outcome: n}) -> {"top": the k hosts with the most URLs, "distinct": hosts}."""

    def __init__(self, k: int):
        self.k = k

    def create_accumulator(self) -> tuple[int, list]:
        return 0, []

    def add_input(self, acc, host_counts):
        n, top = acc
        top.append(host_counts)
        return n + 1, self._trim(top) if len(top) > 2 * self.k else top

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(n for n, _ in accs), self._trim([hc for _, top in accs for hc in top])

    def extract_output(self, acc) -> dict[str, Any]:
        return {"top": self._trim(acc[1]), "distinct": acc[0]}

    def _trim(self, hosts: list) -> list:
        return heapq.nsmallest(self.k, hosts, key=lambda hc: (-sum(hc[1].values()), hc[0]))


class CountHosts(beam.PTransform):
    """{"kept": rows, "rejects": rejects rows, "robots": (origin, verdict)} -> the JSON lines
    above, for a json_lines_table (table_sink.py) of the stage's outputs.

    Three combines: outcomes per host, then the top hosts and their number in one pass, and the
    verdicts; on the local runner each global combine with a default value costs a step of its
    own, so the global ones go without (an empty input writes no line, read as zero)."""

    def expand(self, parts):
        per_host = ((parts["kept"] | "KeptHost" >> beam.Map(lambda r: (host_of(r.get("url")), "fetched")),
                     parts["rejects"] | "RejectHost" >> beam.Map(_reject_outcome))
                    | "Outcomes" >> beam.Flatten()
                    | "PerHost" >> beam.CombinePerKey(_Tally()))
        hosts = (per_host | "TopHosts" >> beam.CombineGlobally(_TopAndDistinct(TOP_HOSTS)).without_defaults()
                 | "HostsLine" >> beam.Map(json.dumps))
        robots = (parts["robots"]
                  | "Verdict" >> beam.MapTuple(lambda origin, record: record["verdict"])
                  | "PerVerdict" >> beam.CombineGlobally(_Tally()).without_defaults()
                  | "RobotsLine" >> beam.Map(lambda d: json.dumps({"robots": d})))
        return (hosts, robots) | "HostLines" >> beam.Flatten()


def read_host_counts(prefix: str) -> dict[str, Any]:
    """{"distinct": hosts, "top": top_hosts rows, "robots": {verdict: origins}}."""
    found: dict[str, Any] = {"distinct": 0, "top": [], "robots": {}}
    for line in read_json_lines(prefix):
        if "top" in line:
            line["top"] = top_hosts([(h, c) for h, c in line["top"]], TOP_HOSTS)
        found.update(line)
    return found
