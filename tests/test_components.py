"""Connected components in Beam (witcurate.pipeline.components) against a plain union-find, on
a graph with long chains and one giant component; the bound on rounds; the later passes'
pipelines build for Dataflow."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import apache_beam as beam
import pytest

from union_find import union_find
from witcurate.pipeline.beam_io import check_graph, make_pipeline, run_pipeline
from witcurate.pipeline.components import rounds_bound
from witcurate.pipeline.components_passes import ComponentsDidNotConverge, Contraction

ROOT = Path(__file__).resolve().parents[1]
DATAFLOW_ARGS = ["--runner=DataflowRunner", "--project=witcurate-test", "--region=us-central1",
                 "--temp_location=gs://witcurate-test-bucket/tmp", f"--setup_file={ROOT / 'setup.py'}"]


def itself(vertex):
    """The rank of a vertex whose payload is itself: the survivor is the smallest vertex."""
    return vertex


def both_ends(edge):
    yield edge[0], edge[0]
    yield edge[1], edge[1]


def chains_and_a_giant(seed: int = 3) -> list[tuple[int, int]]:
    """One giant component (a 400-vertex chain in random order with a few chords, a 200-vertex
    chain in rising order and a 100-leaf star hung on it), 40 separate chains of 2 to 12
    vertices, and a few duplicate edges and self-loops."""
    rng = random.Random(seed)
    ids = rng.sample(range(10**6), 1400)
    giant, rising, star = ids[:400], sorted(ids[400:600]), ids[600:701]
    edges = list(zip(giant, giant[1:]))
    edges += [(rng.choice(giant), rng.choice(giant)) for _ in range(20)]
    edges += list(zip(rising, rising[1:])) + [(rising[-1], giant[0])]
    edges += [(star[0], leaf) for leaf in star[1:]] + [(star[0], giant[200])]
    rest = iter(ids[701:])
    for _ in range(40):
        chain = [next(rest) for _ in range(rng.randint(2, 12))]
        edges += list(zip(chain, chain[1:]))
    edges += edges[:5] + [(ids[0], ids[0])]
    rng.shuffle(edges)
    return edges


def beam_components(edges, work: Path, **options) -> tuple[dict, Contraction, bool]:
    """(vertex -> survivor, the contraction, whether the first pipeline's survivors stood)."""
    cc = Contraction(str(work / "work"), itself, rounds_bound(2 * len(edges)), **options)
    p = make_pipeline([])
    pairs = p | "Edges" >> beam.Create(edges)
    first = cc.start(pairs, pairs | "Payloads" >> beam.FlatMap(both_ends))
    first | "Json" >> beam.Map(json.dumps) | "Write" >> beam.io.WriteToText(str(work / "first" / "part"))
    run_pipeline(p)
    stood = cc.finish([])
    out = "first"
    if not stood:
        p = make_pipeline([])
        (cc.survivors(p) | "Json" >> beam.Map(json.dumps)
                         | "Write" >> beam.io.WriteToText(str(work / "final" / "part")))
        run_pipeline(p)
        out = "final"
    result: dict = {}
    for path in sorted((work / out).glob("part*")):
        for line in path.read_text().splitlines():
            vertex, survivor = json.loads(line)
            assert vertex not in result, vertex
            result[vertex] = survivor
    return result, cc, stood


def test_components_equal_a_union_find_on_chains_and_a_giant_component(tmp_path):
    edges = chains_and_a_giant()
    got, cc, stood = beam_components(edges, tmp_path)
    assert got == union_find(edges)
    summary = cc.summary()
    sizes = collections.Counter(got.values())
    assert max(sizes.values()) >= 700 and len(sizes) == 41              # the giant and 40 chains
    assert not stood and summary["passes"] >= 2                          # too long for one pass
    assert 3 <= summary["rounds_to_converge"] <= rounds_bound(len(got))
    assert summary["vertices"] == len(got) and summary["edges"] == len({frozenset(e) for e in edges
                                                                        if e[0] != e[1]})
    assert summary["peak_worker_rss_mb"] > 0 and summary["workers"] >= 1


def test_small_groups_finish_in_the_first_pipeline(tmp_path):
    """Pairs, stars and cliques, the usual duplicate groups, need one round: the first
    pipeline's survivors stand and no other pipeline runs."""
    edges = [(1, 2), (3, 4), (4, 5), (4, 6), (4, 7)]
    edges += [(a, b) for a in range(10, 16) for b in range(a + 1, 16)]
    got, cc, stood = beam_components(edges, tmp_path)
    assert stood and cc.summary()["passes"] == 1 and cc.summary()["rounds_to_converge"] == 1
    assert got == union_find(edges)


def test_too_many_rounds_is_a_clear_error_and_later_pipelines_build_for_dataflow(tmp_path):
    chain = [(i, i + 1) for i in range(30)]
    cc = Contraction(str(tmp_path / "work"), itself, max_rounds=1, first_rounds=1)
    p = make_pipeline([])
    pairs = p | "Edges" >> beam.Create(chain)
    cc.start(pairs, pairs | "Payloads" >> beam.FlatMap(both_ends))
    run_pipeline(p)
    with pytest.raises(ComponentsDidNotConverge, match=r"did not converge in 1 rounds \(\d+ edges left"):
        cc.finish([])

    # The pipelines that would come next: another pass, and the survivors read back.
    cc.max_rounds = 10
    names = {t.unique_name for t in check_graph(cc.next_pass(DATAFLOW_ARGS)).components.transforms.values()}
    assert any("WriteState" in n for n in names) and any("Round002/ChooseGroup" in n for n in names)
    p = make_pipeline(DATAFLOW_ARGS)
    cc.survivors(p) | "Json" >> beam.Map(json.dumps) | "Write" >> beam.io.WriteToText("gs://witcurate-test-bucket/x")
    names = {t.unique_name for t in check_graph(p).components.transforms.values()}
    assert any("Resolve/Round001/Join" in n for n in names)
