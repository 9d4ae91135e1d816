import pytest

from witcurate.config import load_config
from witcurate.errors import ConfigError


def test_demo_config_loads_with_overrides():
    cfg = load_config("configs/demo.yaml", ["cap.per_query=5", "score.threshold=0.3", "run.beam_args=[--direct_num_workers=2]"])
    assert cfg.cap.per_query == 5 and cfg.score.threshold == 0.3
    assert cfg.run.beam_args == ["--direct_num_workers=2"]
    assert cfg.download.allow_private == ["127.0.0.1:18080"]


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
