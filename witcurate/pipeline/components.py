"""Connected components in Beam by local contraction, one survivor per component.

Each round contracts the graph, in the manner of Łącki et al. 2018 ("Connected Components at
Scale via Local Contractions"), under an order of the vertices drawn afresh each round from a
keyed hash: every vertex x takes label(x), the smallest of x and its neighbours, then
group(x), the smallest label among x and its neighbours (so at most two hops away), and is
merged into it. The next round's graph has the groups as vertices and an edge (group(x),
group(y)) for every edge (x, y) between two groups. Three shuffles a round (group by vertex to
choose the label; gather the neighbours' labels; gather the neighbours' groups to relabel the
edges). A vertex left without edges is a whole component and leaves the graph, and every
round merges at least one vertex of each component that still has an edge; a star or a
clique (the usual duplicate group) finishes in one round, a path in about log3(n). The graph
shrinks geometrically, so all rounds together cost a small multiple of one pass over the
edges, where large-star/small-star (Kiveris et al. 2014) carries every vertex through every
round.

Survivors travel with the contraction: each vertex carries the best (smallest `rank`) payload
of the vertices merged into it, so a component's last vertex holds its survivor. Resolving
the rounds' pointers (x -> group(x)) backwards, from the last round to the first, gives every
original vertex its survivor without ever gathering a component in one place.

Rounds run in passes (witcurate.pipeline.components_passes), each one Beam pipeline.
"""

from __future__ import annotations

import hashlib
import os
import resource
import socket
from typing import Any, Callable, Tuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

# What a round produces: the next round's edges and payloads, this round's pointers, finished
# vertices and counts (also the `kind` column of the state files between passes).
EDGE, BEST, POINTER, FINAL, STATS = "edge", "best", "pointer", "final", "stats"
KeyValue = Tuple[Any, Any]      # what the rounds' DoFns emit: Beam's inference cannot tell
_NEIGHBOUR, _OWN = 0, 1          # tags: what a vertex hears from a neighbour, and of itself


def rounds_bound(vertices: int) -> int:
    """A generous bound on rounds for a graph of at most `vertices` vertices (3 log2 n + 10):
    rounds shrink a component's vertices by a constant factor, so about log3 n are needed."""
    return 3 * max(1, int(vertices)).bit_length() + 10


def _key_bytes(vertex: Any) -> bytes:
    return vertex.encode() if isinstance(vertex, str) else repr(vertex).encode()


class _Counted(beam.DoFn):
    """A DoFn that counts what it does per bundle and reports it, with the peak memory of the
    process it runs in (a worker), as STATS records at the end of each bundle."""

    def start_bundle(self):
        self.counts: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def finish_bundle(self):
        worker = f"{socket.gethostname()}:{os.getpid()}"
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for item in [*self.counts.items(), ("peak_rss_kb", (worker, peak_kb))]:
            yield beam.pvalue.TaggedOutput(STATS, WindowedValue(item, MIN_TIMESTAMP, [GlobalWindow()]))


class _Ordered(_Counted):
    """A round's DoFn: vertices compare by a keyed hash drawn for the round, then by value."""

    def __init__(self, round_no: int):
        self.salt = round_no.to_bytes(16, "little")

    def order(self, vertex):
        digest = hashlib.blake2b(_key_bytes(vertex), digest_size=8, salt=self.salt).digest()
        return digest, vertex


class ChooseLabel(_Ordered):
    """(x, [(NEIGHBOUR, y) | (OWN, payload)]) -> (y, (NEIGHBOUR, (x, label(x)))) for x and each
    neighbour y, label(x) being the smallest of x and its neighbours, and (x, (OWN, the best
    payload merged into x)). A vertex without neighbours is finished: FINAL (x, payload)."""

    def __init__(self, round_no: int, rank: Callable[[Any], Any]):
        super().__init__(round_no)
        self.rank = rank

    def process(self, element):
        x, values = element
        neighbours, best = set(), None
        for tag, value in values:
            if tag == _NEIGHBOUR:
                neighbours.add(value)
            elif best is None or self.rank(value) < self.rank(best):
                best = value
        neighbours.discard(x)
        self.count("vertices")
        if not neighbours:
            self.count("finished")
            yield beam.pvalue.TaggedOutput(FINAL, (x, best))
            return
        self.count("edges_in", len(neighbours))
        label = min(min(neighbours, key=self.order), x, key=self.order)
        for y in neighbours:
            yield y, (_NEIGHBOUR, (x, label))
        yield x, (_NEIGHBOUR, (x, label))
        yield x, (_OWN, best)


class ChooseGroup(_Ordered):
    """(x, [the labels of x and its neighbours, x's payload]) -> x's group, the smallest of
    those labels (two hops away at most): POINTER (x, group), BEST (group, payload), and the
    group to each neighbour (NEIGHBOUR) and to x itself (OWN)."""

    def process(self, element):
        x, values = element
        senders, group, best = set(), None, None
        for tag, value in values:
            if tag == _OWN:
                best = value
                continue
            sender, label = value
            senders.add(sender)
            if group is None or self.order(label) < self.order(group):
                group = label
        senders.discard(x)
        self.count("merged", group != x)
        yield beam.pvalue.TaggedOutput(POINTER, (x, group))
        yield beam.pvalue.TaggedOutput(BEST, (group, best))
        for y in senders:
            yield y, (_NEIGHBOUR, group)
        yield x, (_OWN, group)


class Relabel(_Counted):
    """(x, [x's group, its neighbours' groups]) -> the edges between x's group and theirs."""

    def process(self, element):
        x, values = element
        own, heard = None, set()
        for tag, value in values:
            if tag == _OWN:
                own = value
            else:
                heard.add(value)
        heard.discard(own)
        self.count("edges_out", len(heard))
        for group in heard:
            yield own, group


def add_counts(totals: dict, item: tuple[str, Any]) -> dict:
    """Fold one STATS record into a round's totals: counts add up, and each worker keeps its
    peak memory (`workers`: {worker: peak RSS in KiB})."""
    name, value = item
    if name == "peak_rss_kb":
        worker, kb = value
        workers = totals.setdefault("workers", {})
        workers[worker] = max(kb, workers.get(worker, 0))
    else:
        totals[name] = totals.get(name, 0) + value
    return totals


# ------------------------------------------------------------------ one round -------------------

def _tag_edge(edge):
    return edge[0], (_NEIGHBOUR, edge[1])


def _tag_best(item):
    return item[0], (_OWN, item[1])


def contraction_round(edges, best, round_no: int, rank) -> dict[str, beam.PCollection]:
    """One round on (x, y) directed edges (both directions present) and (x, payload) pieces:
    the next round's EDGE and BEST, this round's POINTER and FINAL records, and its STATS
    (per bundle; `add_counts` sums them, outside the pipeline, which costs no extra step)."""
    name = f"Round{round_no:03d}"
    grouped = ((edges | f"{name}/TagEdges" >> beam.Map(_tag_edge),
                best | f"{name}/TagBest" >> beam.Map(_tag_best))
               | f"{name}/Together" >> beam.Flatten()
               | f"{name}/ByVertex" >> beam.GroupByKey())
    chosen = grouped | f"{name}/ChooseLabel" >> beam.ParDo(ChooseLabel(round_no, rank)).with_output_types(
        KeyValue).with_outputs(FINAL, STATS, main="heard")
    groups = (chosen.heard
              | f"{name}/ByListener" >> beam.GroupByKey()
              | f"{name}/ChooseGroup" >> beam.ParDo(ChooseGroup(round_no)).with_output_types(
                  KeyValue).with_outputs(POINTER, BEST, STATS, main="told"))
    relabelled = (groups.told
                  | f"{name}/ByMember" >> beam.GroupByKey()
                  | f"{name}/Relabel" >> beam.ParDo(Relabel()).with_output_types(
                      KeyValue).with_outputs(STATS, main=EDGE))
    stats = (chosen[STATS], groups[STATS], relabelled[STATS]) | f"{name}/Counts" >> beam.Flatten()
    return {EDGE: relabelled[EDGE], BEST: groups[BEST], POINTER: groups[POINTER],
            FINAL: chosen[FINAL], STATS: stats}


def _best_of(rank):
    return lambda payloads: min(payloads, key=rank)


def _follow(element):
    """(vertex, {"from": vertices pointing at it, "to": [its survivor]}) -> (pointer, survivor)."""
    target, joined = element
    survivors = list(joined["to"])
    if len(survivors) > 1:
        raise RuntimeError(f"components: vertex {target!r} resolves to {len(survivors)} survivors")
    for source in joined["from"]:
        if not survivors:
            raise RuntimeError(f"components: {source!r} points at {target!r}, which resolves to nothing")
        yield source, survivors[0]


def resolve(pointers: list, finals: list, last_best, rank, name: str = "Resolve"):
    """(vertex, survivor payload) for every vertex of round 1, from each round's pointers and
    finished vertices (oldest first) and the payloads the last round merged into its labels."""
    lookup = last_best | f"{name}/LastBest" >> beam.CombinePerKey(_best_of(rank))
    for i in reversed(range(len(pointers))):
        step = f"{name}/Round{i + 1:03d}"
        resolved = ({"from": pointers[i] | f"{step}/ByTarget" >> beam.KvSwap(), "to": lookup}
                    | f"{step}/Join" >> beam.CoGroupByKey()
                    | f"{step}/Follow" >> beam.FlatMap(_follow))
        lookup = (resolved, finals[i]) | f"{step}/WithFinished" >> beam.Flatten()
    return lookup
