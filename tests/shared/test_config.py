import pytest

from revisit.shared.config import EngineConfig, load_toml
from revisit.shared.errors import ConfigError


def _write(tmp_path, text):
    path = tmp_path / "revisit.toml"
    path.write_text(text)
    return path


def test_defaults():
    config = EngineConfig()
    assert config.detector.model == "scrfd_2.5g_kps"
    assert config.recognizer == "w600k_mbf"
    assert config.backend.type == "onnxruntime"


def test_loads_engine_table(tmp_path):
    path = _write(
        tmp_path,
        '[engine]\nrecognizer = "w600k_mbf"\n[engine.detector]\nmodel = "yunet"\n[engine.backend]\ntype = "opencv"\n',
    )
    config = load_toml(path, EngineConfig, "engine")
    assert config.detector.model == "yunet" and config.backend.type == "opencv"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[engine]\nrecogniser = 'w600k_mbf'\n", "recogniser: unknown key"),
        ("[engine.detector]\nscore_treshold = 0.3\n", "detector.score_treshold: unknown key"),
        ("[engine.detector]\nscore_threshold = 3\n", "detector.score_threshold"),
        ("[engine.backend]\ntype = 'cuda'\n", "backend"),
        ("[engine.backend]\ntype = 'onnxruntime'\nthread = 2\n", "backend.onnxruntime.thread: unknown key"),
        ("[engine\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_toml(_write(tmp_path, text), EngineConfig, "engine")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(tmp_path / "absent.toml", EngineConfig)
