"""The demo profile: models whose real weights are absent are served by their tiny stand-ins."""

from __future__ import annotations

import logging

import msgspec
import pytest

from host.plugins import make_plugin_manager
from host.registry import DEMO_NOTE, build_registry
from host.spec import Task
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.pytest_plugin import make_config


def registry_for(tmp_path, demo, weights):
    spec = msgspec.structs.replace(fake_spec("m", Task.EMBEDDING, weights=weights), demo_weights="tiny:qwen3-embedding")
    config = make_config({"demo": demo} if demo is not None else {})
    return build_registry(make_plugin_manager(config, extra=[FakePlugin([spec])]), config)


@pytest.fixture
def local_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return str(tmp_path)


@pytest.mark.parametrize(("demo", "weights_kind", "expect_demo"), [
    (None, "missing-hub-id", True),
    (None, "local", False),
    (True, "local", True),
    (False, "missing-hub-id", False),
])
def test_demo_selection(tmp_path, local_model, caplog, demo, weights_kind, expect_demo) -> None:
    weights = local_model if weights_kind == "local" else "nobody/not-a-cached-model"
    with caplog.at_level(logging.WARNING, logger="plughost.registry"):
        model = registry_for(tmp_path, demo, weights).get("m")
    if expect_demo:
        assert model.spec.options["weights"] == "tiny:qwen3-embedding"
        assert model.spec.description.startswith(DEMO_NOTE) and weights in model.spec.description
        assert "DEMO" in caplog.text and "models.m.weights" in caplog.text
    else:
        assert model.spec.options["weights"] == weights and "DEMO" not in model.spec.description


def test_model_without_stand_in_is_never_demo() -> None:
    config = make_config({"demo": True})
    registry = build_registry(make_plugin_manager(config, extra=[FakePlugin()]), config)
    assert all("DEMO" not in m.spec.description for m in registry)
