import pytest

from witcurate.config import load_config
from witcurate.demo.hosts import allow_private
from witcurate.errors import ConfigError


def test_demo_config_loads_with_overrides():
    cfg = load_config("configs/demo.yaml", ["cap.per_query=5", "score.threshold=0.3", "run.beam_args=[--direct_num_workers=2]"])
    assert cfg.cap.per_query == 5 and cfg.score.threshold == 0.3
    assert cfg.run.beam_args == ["--direct_num_workers=2"]
    # exactly the demo world's hosts (demo.host and the next seven, on demo.port)
    assert cfg.download.allow_private == allow_private(cfg.demo.host, cfg.demo.port)


@pytest.mark.parametrize("text,match", [
    ("cap:\n  per_qurey: 3\n", "unknown key 'per_qurey'"),
    ("capp:\n  per_query: 3\n", "unknown section 'capp'"),
    ("cap:\n  per_query: lots\n", "cap.per_query: expected int"),
    ("cap: [1, 2]\n", "expected a mapping"),
    ("cap:\n  per_query: 3\n   bad: indent\n", "not valid YAML"),
])
def test_bad_config_names_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(str(path))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("nope.yaml")


def test_bad_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["per_query=3"])


@pytest.mark.parametrize("override, match", [
    ("score.batch_size=0", "score.batch_size must be at least 1, got 0"),
    ("score.min_batch_size=200", r"score.min_batch_size must be between 1 and score.batch_size \(128\)"),
    ("score.precision=fp8", "score.precision must be one of fp16, bf16, fp32"),
    ("score.threshold=28", r"score.threshold must be a cosine similarity in \[-1, 1\]"),
    ("score.threshold=.nan", "score.threshold"),
    ("score.top_fraction=0", r"score.top_fraction must be in \(0, 1\]"),
    ("score.top_fraction=1.5", "score.top_fraction"),
    ("score.top_fraction=0.3", r"score: set exactly one .* \(both are set\)"),   # demo sets a threshold
    ("score.per_query_top_fraction=1.5", r"score.per_query_top_fraction must be in \(0, 1\]"),
    ("score.per_query_top_fraction=0.5", r"score: set exactly one .* \(both are set\)"),
    ("download.urls_per_shard=0", "download.urls_per_shard must be at least 1"),
    ("download.retries=-1", "download.retries must be at least 0"),
    ("download.resize_mode=squash", "download.resize_mode must be one of no, keep_ratio"),
    ("download.allow_private=['10.0.0.0/33']", "download.allow_private"),
    ("dedupe.max_hamming=64", "dedupe.max_hamming must be at most 63"),
    ("dedupe.bands=0", "dedupe.bands must be at least 1"),
    ("balance.oversample=0", "balance.oversample must be above 0"),
    ("cap.per_query=0", "cap.per_query must be at least 1"),
    ("queries.max_bigrams=-2", "queries.max_bigrams must be at least -1"),
    ("demo.port=70000", "demo.port must be at most 65535"),
    ("train.precision=half", "train.precision must be one of amp"),
    ("ingest.max_chars=3", r"ingest.max_chars \(3\) is below ingest.min_chars \(5\)"),
])
def test_values_out_of_range_fail_when_the_config_loads(override, match):
    with pytest.raises(ConfigError, match=f"^configs/demo.yaml: {match}"):
        load_config("configs/demo.yaml", [override])


def test_defaults_and_edges_are_in_range():
    load_config(None)
    load_config("configs/demo.yaml", ["score.threshold=-1", "download.min_side=0", "dedupe.max_hamming=0",
                                      "queries.max_titles=-1", "queries.max_unigrams=0"])
    load_config("configs/demo.yaml", ["score.threshold=null", "score.top_fraction=1"])


def test_a_keep_rule_is_needed_only_where_the_score_stage_runs():
    from witcurate.config_checks import validate
    cfg = load_config(None)                       # the WIT defaults set neither rule
    validate(cfg, stages=["ingest", "match"])
    with pytest.raises(ConfigError, match="neither is set"):
        validate(cfg, stages=["ingest", "score"])


def test_run_with_a_bad_value_fails_before_its_first_stage(tmp_path, capsys):
    from cli_errors import one_line_error
    out, world = tmp_path / "run", tmp_path / "world"
    for bad in ("score.batch_size=0", "score.threshold=null"):    # a range; a stage-dependent rule
        err = one_line_error(capsys, ["run", "--config", "configs/demo.yaml", "--out", str(out),
                                      "--set", bad, "--set", f"demo.root={world}"])
        assert bad.partition("=")[0] in err or "neither is set" in err
        assert not out.exists() and not world.exists()        # no stage ran, no demo world was made
