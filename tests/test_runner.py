"""The stage runner's contracts: accounting, atomic output, skip-when-done, resume after a kill."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from witcurate.config import Config
from witcurate.errors import AccountingError, InputError
from witcurate.pipeline import fs
from witcurate.pipeline.audit import audit_run, format_table
from witcurate.pipeline.beam_io import reject
from witcurate.pipeline.runner import MODEL, StageResult, load_manifest, run_stage
from witcurate.schemas import REJECTS


class EvenStage:
    """Keeps odd numbers, rejects even ones; `lose` drops a record and `extra` rejects one twice,
    each breaking the accounting."""
    name = "even"
    sections = ("cap",)

    def __init__(self, n=10, lose=False, crash=False, extra=False):
        self.n, self.lose, self.crash, self.extra, self.calls = n, lose, crash, extra, 0

    def run(self, ctx):
        self.calls += 1
        nums = list(range(self.n))
        kept = [{"n": i} for i in nums if i % 2]
        rejected = [reject({"uid": str(i)}, "even") for i in nums if not i % 2]
        if self.lose:
            rejected = rejected[1:]
        if self.extra:
            rejected = rejected + rejected[:1]
        pq.write_table(pa.Table.from_pylist(kept, pa.schema([("n", pa.int64())])),
                       fs.join(ctx.tmp_dir, "part-00000.parquet"))
        if self.crash:
            raise RuntimeError("killed mid-stage")
        pq.write_table(pa.Table.from_pylist(rejected, REJECTS), fs.join(ctx.tmp_dir, "rejects", "part-00000.parquet"))
        return StageResult(n_in=self.n)


def test_manifest_counts_and_reasons(tmp_path):
    m = run_stage(EvenStage(), Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    assert m["counts"] == {"in": 10, "kept": 5, "rejected": 5, "reasons": {"even": 5}}
    assert (tmp_path / "even" / "_SUCCESS.json").exists()
    assert not (tmp_path / ".tmp-even").exists()
    assert audit_run(str(tmp_path))[0].problems == []


@pytest.mark.parametrize("broken, counts", [
    ({"lose": True}, "in=10 kept=5 rejected=4"),        # a record vanished
    ({"extra": True}, "in=10 kept=5 rejected=6"),       # one reject too many
])
def test_unbalanced_stage_is_an_error_and_lands_nothing(tmp_path, broken, counts):
    with pytest.raises(AccountingError, match=f"does not balance: {counts}"):
        run_stage(EvenStage(**broken), Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    assert not (tmp_path / "even").exists()


def test_finished_stage_is_skipped_until_its_config_changes(tmp_path):
    stage = EvenStage()
    run_stage(stage, Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    again = run_stage(stage, Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    assert again["skipped"] and stage.calls == 1
    changed = Config()
    changed.cap.per_query = 7
    run_stage(stage, changed, str(tmp_path / "even"), {}, progress=lambda s: None)
    assert stage.calls == 2
    unrelated = Config()
    unrelated.train.epochs = 99          # not one of the stage's sections: no rerun
    unrelated.cap.per_query = 7
    run_stage(stage, unrelated, str(tmp_path / "even"), {}, progress=lambda s: None)
    assert stage.calls == 2


def test_killed_stage_leaves_no_output_and_rerun_finishes(tmp_path):
    with pytest.raises(RuntimeError):
        run_stage(EvenStage(crash=True), Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    assert not (tmp_path / "even").exists()          # nothing half-written under the final name
    m = run_stage(EvenStage(), Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    assert m["counts"]["kept"] == 5
    assert not (tmp_path / ".tmp-even").exists()


def test_upstream_change_reruns_downstream_only_when_its_content_changed(tmp_path):
    up = EvenStage()
    run_stage(up, Config(), str(tmp_path / "even"), {}, progress=lambda s: None)

    class Down(EvenStage):
        name = "down"
    down = Down()
    lines = []
    run_stage(down, Config(), str(tmp_path / "down"), {"in": str(tmp_path / "even")}, progress=lines.append)
    run_stage(down, Config(), str(tmp_path / "down"), {"in": str(tmp_path / "even")}, progress=lines.append)
    assert down.calls == 1
    changed = Config()
    changed.cap.per_query = 3            # upstream reruns and lands the same rows: nothing to redo
    run_stage(up, changed, str(tmp_path / "even"), {}, progress=lambda s: None)
    run_stage(down, Config(), str(tmp_path / "down"), {"in": str(tmp_path / "even")}, progress=lines.append)
    assert up.calls == 2 and down.calls == 1 and "[down] already done" in lines[-1]
    up.n = 12                            # upstream lands two more rows: downstream reruns
    changed.cap.per_query = 4
    run_stage(up, changed, str(tmp_path / "even"), {}, progress=lambda s: None)
    run_stage(down, Config(), str(tmp_path / "down"), {"in": str(tmp_path / "even")}, progress=lines.append)
    assert down.calls == 2


def test_audit_finds_tampered_output(tmp_path):
    run_stage(EvenStage(), Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    pq.write_table(pa.table({"n": [1]}), tmp_path / "even" / "part-00000.parquet")
    problems = audit_run(str(tmp_path))[0].problems
    assert any("kept" in p for p in problems)


def test_missing_or_wrong_input_is_a_clear_error(tmp_path):
    class NeedsCandidates(EvenStage):
        name = "needs"
        from witcurate.schemas import CANDIDATES as input_schema
    with pytest.raises(InputError, match="does not exist"):
        run_stage(NeedsCandidates(), Config(), str(tmp_path / "needs"), {"in": str(tmp_path / "nope")},
                  progress=lambda s: None)
    run_stage(EvenStage(), Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    with pytest.raises(InputError, match="missing column 'uid'"):
        run_stage(NeedsCandidates(), Config(), str(tmp_path / "needs"), {"in": str(tmp_path / "even")},
                  progress=lambda s: None)


def test_unwritable_output_is_a_user_error(tmp_path):
    from witcurate.errors import UserError
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        run_stage(EvenStage(), Config(), str(blocker / "sub" / "even"), {}, progress=lambda s: None)


def test_manifest_is_loadable(tmp_path):
    run_stage(EvenStage(), Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    m = load_manifest(str(tmp_path / "even"))
    assert m["config"]["cap"]["per_query"] == 20_000 and m["wall_seconds"] >= 0


def _package(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_code_hash_follows_imports_and_nothing_else(tmp_path, monkeypatch):
    from witcurate.pipeline import code_hash as ch
    pkg = tmp_path / "witcurate"
    _package(pkg, {
        "__init__.py": "__version__ = '1'\n",
        "config.py": "X = 1\n",
        "sub/__init__.py": "",
        "sub/stage.py": "from witcurate import config\nfrom . import rules\n"
                        "def run():\n    from witcurate.sub.lazy import f\n    return f\n",
        "sub/rules.py": "import witcurate.sub.deep as deep\n",
        "sub/deep.py": "Y = 1\n",
        "sub/lazy.py": "def f(): pass\n",
        "other.py": "Z = 1\n",
    })
    monkeypatch.setattr(ch, "ROOT", str(pkg))
    ch._source.cache_clear()
    ch.module_closure.cache_clear()
    closure = ch.module_closure("witcurate.sub.stage")
    assert closure == ("witcurate", "witcurate.sub", "witcurate.sub.deep", "witcurate.sub.lazy",
                       "witcurate.sub.rules", "witcurate.sub.stage")      # config is not code

    def rehash(name, text):
        (pkg / name).write_text(text)
        ch._source.cache_clear()
        ch.module_closure.cache_clear()
        return ch.code_hash("witcurate.sub.stage")

    before = ch.code_hash("witcurate.sub.stage")
    assert rehash("other.py", "Z = 2\n") == before          # not imported: no rerun
    assert rehash("config.py", "X = 2\n") == before
    assert rehash("sub/deep.py", "Y = 2\n") != before        # two imports away: rerun
    monkeypatch.undo()                                       # the real package again
    ch._source.cache_clear()
    ch.module_closure.cache_clear()


def test_the_real_stages_hash_only_what_they_import():
    from witcurate.pipeline.code_hash import module_closure
    cap = module_closure("witcurate.pipeline.cap")
    assert "witcurate.filters.cap" in cap and "witcurate.trainer.model" not in cap
    # the config's range checks know URL rules, but cap does not run them
    assert "witcurate.filters.urls" not in cap and "witcurate.pipeline.balance" not in cap
    assert "witcurate.trainer.model" in module_closure("witcurate.pipeline.score")


def _parsed_imports(module: str, kind: str, source: bytes) -> set[str]:
    """What Python's own parser says `module` imports from the package (the reference the code
    hash's line pattern is held to)."""
    import ast
    package = module if kind == "pkg" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "witcurate" or name.startswith("witcurate.")}


def test_the_import_scan_finds_what_the_parser_finds_in_every_module():
    from witcurate.pipeline import code_hash as ch
    root = Path(ch.ROOT)
    checked = 0
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        kind = "pkg" if parts[-1] == "__init__" else "mod"
        module = ".".join(("witcurate",) + (parts[:-1] if kind == "pkg" else parts))
        source = path.read_bytes()
        # never fewer (a missed import would leave a stage standing after a change); more only
        # where a docstring shows an import (witcurate.trainer.train's usage example)
        assert _parsed_imports(module, kind, source) <= set(ch._imports(module, kind, source)), module
        checked += 1
    assert checked > 50
    tricky = (b"from . import (a,  # a comment\n    b as c)\nimport witcurate.x as y, witcurate.z\n"
              b"def f():\n    from .. import q\n")
    assert set(ch._imports("witcurate.p.m", "mod", tricky)) == _parsed_imports("witcurate.p.m", "mod", tricky) == {
        "witcurate.p", "witcurate.p.a", "witcurate.p.b", "witcurate.x", "witcurate.z", "witcurate", "witcurate.q"}


def test_declaring_every_stage_imports_no_torch():
    """`witcurate run` looks up every stage it lists, landed or not, to fingerprint it; torch
    (imported by the score and target stages' models, and by Beam's RunInference) costs about
    2.6 s, so a stage module imports it only when the stage runs. A run resuming past its last
    finished stage, and every kill-and-resume attempt, starts in about a second of imports."""
    script = ("import sys\n"
              "from witcurate.pipeline.stages import REGISTRY, get_stage\n"
              "[get_stage(name) for name in REGISTRY]\n"
              "print(sorted(m for m in ('torch', 'open_clip', 'faiss', 'cv2') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_code_change_reruns_the_stage(tmp_path, monkeypatch):
    from witcurate.pipeline import runner
    stage = EvenStage()
    run_stage(stage, Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    monkeypatch.setattr(runner, "code_hash", lambda module: "edited")
    run_stage(stage, Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    assert stage.calls == 2


class WeightsStage:
    """Produces a model, not records: writes weights (or nothing, when `empty`)."""
    name = "weights"
    sections = ("train",)
    produces = MODEL

    def __init__(self, empty=False):
        self.empty = empty

    def run(self, ctx):
        if not self.empty:
            with open(fs.join(ctx.tmp_dir, "model.pt"), "wb") as f:
                f.write(b"w" * 100)
            fs.makedirs(fs.join(ctx.tmp_dir, "logs"))
            with open(fs.join(ctx.tmp_dir, "logs", "metrics.jsonl"), "w") as f:
                f.write("{}\n")
        return StageResult(units="samples", per_second=12.5)


def test_a_model_stage_lists_its_files_instead_of_counting_records(tmp_path):
    lines = []
    m = run_stage(WeightsStage(), Config(), str(tmp_path / "weights"), {}, progress=lines.append)
    assert m["produces"] == "model" and "counts" not in m
    assert m["outputs"] == {"model.pt": 100, "logs/metrics.jsonl": 3}
    assert m["throughput"] == {"units": "samples", "per_second": 12.5}
    assert not (tmp_path / "weights" / "rejects").exists()
    assert not list((tmp_path / "weights").glob("*.parquet"))        # no empty part to satisfy a count
    assert "model: logs/metrics.jsonl, model.pt" in lines[-1]
    again = run_stage(WeightsStage(), Config(), str(tmp_path / "weights"), {}, progress=lines.append)
    assert again["skipped"] and "already done (model: logs/metrics.jsonl, model.pt)" in lines[-1]
    run_stage(EvenStage(), Config(), str(tmp_path / "even"), {}, progress=lambda s: None)
    audits = {a.stage: a for a in audit_run(str(tmp_path))}
    assert audits["weights"].problems == [] and audits["even"].problems == []
    table = format_table(list(audits.values()))
    assert "model: logs/metrics.jsonl, model.pt" in table
    (tmp_path / "weights" / "model.pt").write_bytes(b"w")
    (tmp_path / "weights" / "logs" / "metrics.jsonl").unlink()
    assert audit_run(str(tmp_path))[1].problems == [
        "logs/metrics.jsonl is missing", "model.pt is 1 bytes, the manifest says 100"]


def test_a_model_stage_that_writes_nothing_fails(tmp_path):
    with pytest.raises(AccountingError, match="produces a model but wrote no files"):
        run_stage(WeightsStage(empty=True), Config(), str(tmp_path / "weights"), {}, progress=lambda s: None)
    assert not (tmp_path / "weights").exists()


def test_the_dataset_card_shows_a_model_stage_by_its_files(tmp_path):
    from witcurate.pipeline.card import build_card

    class Scorer(WeightsStage):
        name = "scorer"
    run_stage(Scorer(), Config(), str(tmp_path / "scorer"), {}, progress=lambda s: None)
    build_card(str(tmp_path), str(tmp_path / "shards"), Config())
    readme = (tmp_path / "shards" / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| scorer |")]
    assert "model: logs/metrics.jsonl, model.pt" in row and "12.5 samples/s" in row
