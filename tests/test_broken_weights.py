"""Finding 2 of issue 12: configured weights that are broken never become the random demo stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import TestClient

from host.app import create_app
from host.registry import DEMO_NOTE
from host.testing.pytest_plugin import CPU_ONLY, make_config

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
EMBED = "Qwen3-Embedding-0.6B"


def _weights(tmp_path: Path, kind: str) -> str:
    folder = tmp_path / "weights"
    if kind == "missing-folder":
        return str(folder)
    folder.mkdir()
    if kind == "truncated-config":
        (folder / "config.json").write_text('{"architectures": ["Qwen3Model"], "hidden_si', encoding="utf-8")
    elif kind == "no-config":
        (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    return str(folder)


@pytest.mark.parametrize("kind", ["missing-folder", "truncated-config", "no-config"])
def test_broken_local_weights_are_a_load_error_naming_the_model(tmp_path: Path, kind: str) -> None:
    config = make_config(
        {"plugins": {"paths": [str(PLUGINS)]}, "models": {EMBED: {"weights": _weights(tmp_path, kind)}}}
    )
    app = create_app(config, budgets=CPU_ONLY)
    with TestClient(app) as client:
        card = client.get(f"/v1/models/{EMBED}").json()
        assert DEMO_NOTE not in (card.get("description") or "")
        response = client.post("/v1/embeddings", json={"model": EMBED, "input": "hello"})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "model_load_failed"
        assert EMBED in error["message"] and f"models.{EMBED}.weights" in error["message"]


def test_a_hub_id_not_in_the_cache_still_gets_the_stand_in(tmp_path: Path) -> None:
    config = make_config(
        {"plugins": {"paths": [str(PLUGINS)]}, "models": {EMBED: {"weights": "nobody/not-a-cached-model"}}}
    )
    with TestClient(create_app(config, budgets=CPU_ONLY)) as client:
        card = client.get(f"/v1/models/{EMBED}").json()
        assert card["description"].startswith(DEMO_NOTE)
