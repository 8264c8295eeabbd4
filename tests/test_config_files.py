"""Config files as operators write them (issue 12, finding 8): duplicate keys are errors that name
the key and its lines, and a file kept in another folder still finds the bundled plugins."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.contract.config import ConfigError, load_config
from host.plugins import BUNDLED_PLUGINS, plugin_folders
from host.testing.pytest_plugin import CPU_ONLY


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        (
            "models:\n  a:\n    weights: x\nserver:\n  port: 1\nmodels:\n  b: {}\n",
            "'models'",
            "line 6; first on line 1",
        ),
        ("server:\n  port: 1\n  host: h\n  port: 2\n", "'port'", "line 4; first on line 2"),
        ("models:\n  m:\n    weights: a\n    weights: b\n", "'weights'", "line 4; first on line 3"),
    ],
)
def test_duplicate_keys_are_errors(tmp_path: Path, text: str, key: str, lines: str) -> None:
    file = tmp_path / "plughost.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    message = str(info.value)
    assert str(file) in message and f"duplicate key {key}" in message and lines in message


def test_yaml_that_is_not_safe_is_still_refused(tmp_path: Path) -> None:
    file = tmp_path / "plughost.yaml"
    file.write_text("server: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(file)


def test_a_config_in_another_folder_uses_the_bundled_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_imports: None
) -> None:
    etc = tmp_path / "etc" / "plughost"
    etc.mkdir(parents=True)
    file = etc / "plughost.yaml"
    file.write_text("models:\n  Qwen3-Embedding-0.6B:\n    weights: demo:embed_qwen3.demo:TINY\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(file)
    assert config.plugins.paths is None
    assert plugin_folders(config) == [BUNDLED_PLUGINS] and (BUNDLED_PLUGINS / "embed_qwen3").is_dir()
    with TestClient(create_app(config, budgets=CPU_ONLY), base_url="http://127.0.0.1") as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert "Qwen3-Embedding-0.6B" in ids


def test_listed_plugin_paths_still_resolve_next_to_the_config(tmp_path: Path) -> None:
    file = tmp_path / "conf" / "plughost.yaml"
    file.parent.mkdir()
    file.write_text("plugins:\n  paths: [myplugins, /abs/plugins]\n")
    assert plugin_folders(load_config(file)) == [file.parent / "myplugins", Path("/abs/plugins")]
