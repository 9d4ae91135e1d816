"""Rounds of witcurate.pipeline.components in passes, one Beam pipeline each, with a
convergence check between them.

The first pass (two rounds unless told otherwise) runs inside the caller's pipeline, which also
resolves survivors from it: when its last round left no edge, that one pipeline is the whole
job. A group that is a star or a clique finishes in one round, but a chain of near-duplicates
(A near B near C, A and C apart) needs a second, and one such chain anywhere in the pool is
enough: the demo world's dedupe needs two rounds. With one round in the first pass that cost
two more pipelines (the next pass and the survivors read back: dedupe on the demo took 7.5 to
8.1 s against 2.7 to 3.7 s); the second round, when the first already finished everything,
runs on no edges (0.6 s on the local runner). Otherwise the first pass's state is read back
and further passes, each planned for the edges left, run until a round leaves no edge; more
rounds than `max_rounds` is an error. Each
pass writes one Parquet file set under work_dir/components/pass-NNN: the edges and payloads
left after its last round, the pointers and finished vertices of every round, and each round's
counts (vertices, edges in and out, merged vertices, each worker's peak memory).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.coders import FastPrimitivesCoder

from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import make_pipeline, run_pipeline
from witcurate.pipeline.components import (BEST, EDGE, FINAL, POINTER, STATS, add_counts,
                                           contraction_round, resolve)
from witcurate.pipeline.tables import parquet_files

STATE_SCHEMA = pa.schema([("kind", pa.string()), ("round", pa.int32()),
                          ("k", pa.binary()), ("v", pa.binary())])
_CODER = FastPrimitivesCoder()


class ComponentsDidNotConverge(RuntimeError):
    """More rounds than the bound: a graph the contraction does not shrink, which is a bug."""


def _encode(kind: str, round_no: int):
    return lambda kv: {"kind": kind, "round": round_no, "k": _CODER.encode(kv[0]), "v": _CODER.encode(kv[1])}


def _encode_stats(round_no: int):
    return lambda item: {"kind": STATS, "round": round_no, "k": _CODER.encode(None), "v": _CODER.encode(item)}


def _decode(record) -> tuple[str, int, Any, Any]:
    return record["kind"], record["round"], _CODER.decode(record["k"]), _CODER.decode(record["v"])


def _is(kind: str, round_no: int | None = None):
    return lambda rec: rec[0] == kind and (round_no is None or rec[1] == round_no)


def _key_value(rec):
    return rec[2], rec[3]


def read_state(p: beam.Pipeline, pass_dirs: list[str], name: str):
    """The decoded (kind, round, key, value) records of finished passes."""
    files = [f for d in pass_dirs for f in parquet_files(d)]
    if not files:
        return p | f"{name}/Empty" >> beam.Create([])
    return (p | f"{name}/Files" >> beam.Create(files)
              | f"{name}/Read" >> beam.io.ReadAllFromParquet(columns=["kind", "round", "k", "v"])
              | f"{name}/Decode" >> beam.Map(_decode))


def select(records, kind: str, round_no: int | None, name: str):
    return (records | f"{name}/Only" >> beam.Filter(_is(kind, round_no))
                    | f"{name}/KV" >> beam.Map(_key_value))


def read_pass_stats(pass_dir: str, first: int, last: int) -> list[dict]:
    """The totals of each round first..last of a pass (zeros for a round that saw nothing)."""
    totals = {r: {"round": r} for r in range(first, last + 1)}
    for path in parquet_files(pass_dir):
        with fs.open_file(path) as f:
            table = pq.read_table(f, columns=["kind", "round", "v"])
        table = table.filter(pc.equal(table.column("kind"), STATS))
        for round_no, v in zip(table.column("round").to_pylist(), table.column("v").to_pylist()):
            add_counts(totals[round_no], _CODER.decode(v))
    return [totals[r] for r in range(first, last + 1)]


# ------------------------------------------------------------------ the passes ------------------

def _symmetric(pair):
    a, b = pair
    if a != b:
        yield a, b
        yield b, a


class Contraction:
    """Drives the rounds: the first pass goes inside the caller's pipeline (`start`), whose
    survivors are final if that pass converged (`finish` says so); otherwise `finish` runs
    more passes, each its own pipeline, and `survivors` reads them all back."""

    def __init__(self, work_dir: str, rank: Callable[[Any], Any], max_rounds: int,
                 first_rounds: int = 2, progress: Callable[[str], None] = lambda msg: None):
        self.dir = fs.join(work_dir, "components")
        self.rank = rank
        self.max_rounds = max_rounds
        self.first_rounds = max(1, min(first_rounds, max_rounds))
        self.progress = progress
        self.passes: list[dict] = []          # {"dir", "first", "last", "seconds"}
        self.rounds: list[dict] = []          # each round's counts
        fs.rm(self.dir)                      # a killed attempt's passes belong to another try

    def start(self, edges, payloads):
        """Apply the first pass to undirected (vertex, vertex) edges and (vertex, payload)
        pieces (any number per vertex; the best by `rank` counts) in the caller's pipeline;
        returns its (vertex, survivor payload) collection, final if `finish` says so."""
        self.started = time.time()
        directed = edges | "Components/Symmetric" >> beam.FlatMap(_symmetric)
        out = self._pass(directed, payloads, 1, self.first_rounds)
        return resolve(out[POINTER], out[FINAL], out[BEST], self.rank, "Components/Resolve")

    def finish(self, beam_args: list[str]) -> bool:
        """True when the first pass already converged; else runs passes until one does."""
        self._record(self.started)
        speculative_ok = self.converged
        while not self.converged:
            done = self.passes[-1]["last"]
            if done >= self.max_rounds:
                left = self.rounds[-1].get("edges_out", 0) // 2
                raise ComponentsDidNotConverge(
                    f"connected components did not converge in {done} rounds "
                    f"({left} edges left; the bound is {self.max_rounds})")
            start = time.time()
            run_pipeline(self.next_pass(beam_args))
            self._record(start)
        return speculative_ok

    def next_pass(self, beam_args: list[str]) -> beam.Pipeline:
        """The pipeline of the next pass, built on the last one's state, not yet run."""
        done = self.passes[-1]["last"]
        length = min(self._rounds_to_plan(), self.max_rounds - done)
        name = f"Pass{len(self.passes)}"
        p = make_pipeline(beam_args)
        state = read_state(p, [self.passes[-1]["dir"]], f"{name}/State")
        self._pass(select(state, EDGE, None, f"{name}/Edges"), select(state, BEST, None, f"{name}/Best"),
                   done + 1, done + length)
        return p

    def survivors(self, p: beam.Pipeline):
        """(vertex, survivor payload) for every vertex, read back from all passes."""
        state = read_state(p, [ps["dir"] for ps in self.passes], "Components/State")
        last = self.passes[-1]["last"]
        pointers = [select(state, POINTER, r, f"Components/Pointers{r:03d}") for r in range(1, last + 1)]
        finals = [select(state, FINAL, r, f"Components/Finished{r:03d}") for r in range(1, last + 1)]
        best = select(state, BEST, None, "Components/LastBest")
        return resolve(pointers, finals, best, self.rank, "Components/Resolve")

    def _rounds_to_plan(self) -> int:
        """Enough rounds for the edges left if each round divides them by three, as rounds
        mostly do (or better): a pass that plans too few needs another pipeline, one that
        plans too many runs empty rounds, which cost far less."""
        left = self.rounds[-1].get("edges_out", 0) // 2
        return math.ceil(math.log(left + 1, 3)) + 1

    @property
    def converged(self) -> bool:
        return bool(self.rounds) and self.rounds[-1].get("edges_out", 0) == 0

    def _pass(self, edges, best, first: int, last: int) -> dict[str, list]:
        """Rounds first..last on the current pipeline, writing their state in one file set."""
        pass_dir = fs.join(self.dir, f"pass-{len(self.passes):03d}")
        self.passes.append({"dir": pass_dir, "first": first, "last": last})
        name = f"Pass{len(self.passes) - 1}"
        records, kept = [], {POINTER: [], FINAL: []}
        for round_no in range(first, last + 1):
            out = contraction_round(edges, best, round_no, self.rank)
            edges, best = out[EDGE], out[BEST]
            for kind in (POINTER, FINAL):
                kept[kind].append(out[kind])
                records.append(out[kind] | f"{name}/Round{round_no:03d}/Encode{kind}" >> beam.Map(_encode(kind, round_no)))
            records.append(out[STATS] | f"{name}/Round{round_no:03d}/EncodeStats" >> beam.Map(_encode_stats(round_no)))
        for kind, pcoll in ((EDGE, edges), (BEST, best)):
            records.append(pcoll | f"{name}/Encode{kind}" >> beam.Map(_encode(kind, last + 1)))
        (tuple(records) | f"{name}/AllState" >> beam.Flatten()
                        | f"{name}/WriteState" >> beam.io.WriteToParquet(
                            fs.join(pass_dir, "part"), STATE_SCHEMA, file_name_suffix=".parquet"))
        return {**kept, BEST: best}

    def _record(self, started: float) -> None:
        done = self.passes[-1]
        done["seconds"] = round(time.time() - started, 3)
        stats = read_pass_stats(done["dir"], done["first"], done["last"])
        self.rounds.extend(stats)
        for s in stats:
            self.progress(f"[components] round {s['round']}: {s.get('vertices', 0)} vertices, "
                          f"{s.get('edges_in', 0) // 2} edges, {s.get('finished', 0)} components finished")

    def summary(self) -> dict[str, Any]:
        """What the manifest records: rounds, passes, sizes, and each worker's peak memory."""
        workers: dict[str, int] = {}
        for s in self.rounds:
            for worker, kb in s.get("workers", {}).items():
                workers[worker] = max(kb, workers.get(worker, 0))
        first_empty = next((s["round"] for s in self.rounds if s.get("edges_out", 0) == 0), None)
        return {
            "rounds_to_converge": first_empty,
            "rounds_run": len(self.rounds),
            "passes": len(self.passes),
            "vertices": self.rounds[0].get("vertices", 0) if self.rounds else 0,
            "edges": self.rounds[0].get("edges_in", 0) // 2 if self.rounds else 0,
            "pass_seconds": [ps.get("seconds") for ps in self.passes],
            "peak_worker_rss_mb": round(max(workers.values(), default=0) / 1024, 1),
            "workers": len(workers),
        }
