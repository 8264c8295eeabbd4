"""The "write a plugin" walkthrough (docs/plugins.md) works as written: its code blocks are
assembled into a package, discovered from a plugin folder, and served to the openai client."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from openai import InternalServerError, OpenAI

from host.testing.pytest_plugin import make_config
from host.testing.server import serve_in_thread

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def test_plugin_walkthrough_runs(tmp_path: Path, plughost_app, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    declaration, demo, backend, test = blocks
    package = tmp_path / "plugins" / "plughost_echo" / "plughost_echo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(declaration)
    (package / "demo.py").write_text(demo)
    (package / "backend.py").write_text(backend)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        _serve_and_run(tmp_path, plughost_app, test)
    finally:
        sys.modules.pop("plughost_echo", None)
        sys.modules.pop("plughost_echo.backend", None)
        sys.modules.pop("plughost_echo.demo", None)


def _assert_refused(url: str) -> None:
    import httpx

    chat = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    cases = [
        ("/v1/chat/completions", {**chat, "tools": [tool]}, "tools"),
        ("/v1/chat/completions", {**chat, "response_format": {"type": "json_object"}}, "response_format"),
        ("/v1/chat/completions", {**chat, "logprobs": True}, "logprobs"),
        ("/v1/completions", {"model": "echo-1", "prompt": "hi", "logprobs": 2}, "logprobs"),
    ]
    for path, body, param in cases:
        for stream in (False, True):
            r = httpx.post(url + path, json={**body, "stream": stream})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == param


def _serve_and_run(tmp_path: Path, plughost_app, test: str) -> None:
    from host.contract.config import ConfigError
    from host.demo import load_demo

    config = make_config({"plugins": {"paths": [str(tmp_path / "plugins")]}, "demo": False})
    app = plughost_app(config)
    assert [m.spec.id for m in app.state.registry] == ["echo-1"]
    assert app.state.registry.get("echo-1").spec.weights == "example/echo-1"
    # The option Struct: typed, and a typo is an error naming the key.
    typo = make_config(
        {"plugins": {"paths": [str(tmp_path / "plugins")]}, "models": {"echo-1": {"options": {"prefx": 1}}}}
    )
    with pytest.raises(ConfigError, match=r"^models\.echo-1\.options\.prefx: unknown key$"):
        plughost_app(typo)
    # The demo builder: the stand-in the demo profile serves, built into the cache on use.
    demo = plughost_app(make_config({"plugins": {"paths": [str(tmp_path / "plugins")]}, "demo": True}))
    assert demo.state.registry.get("echo-1").spec.weights == "demo:plughost_echo.demo:TINY"
    folder = load_demo("plughost_echo.demo:TINY").folder(tmp_path / "cache")
    assert (folder / "config.json").is_file()
    hi = [{"role": "user", "content": "hi"}]
    with serve_in_thread(app) as url:  # demo: false, and example/echo-1 was never pulled: a 503 saying so
        client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(InternalServerError, match="plughost pull echo-1"):
            client.chat.completions.create(model="echo-1", messages=hi)
    on_disk = make_config(
        {
            "plugins": {"paths": [str(tmp_path / "plugins")]},
            "demo": False,
            "models": {"echo-1": {"weights": str(folder)}},
        }
    )
    with serve_in_thread(plughost_app(on_disk)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="echo-1", messages=hi)
        assert reply.choices[0].message.content == "hi"
        # Every chat-like route answers correctly: raw prompts (declared) ...
        done = client.completions.create(model="echo-1", prompt="one two three", max_tokens=2)
        assert (done.choices[0].text, done.choices[0].finish_reason) == ("one two", "length")
        streamed = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "a b"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "a b"
        # ... and a 400 naming the field for what it does not declare, before the backend runs.
        _assert_refused(url)
    assert reply.choices[0].message.content == "hi"
    # The walkthrough's own test, as a plugin author would run it.
    namespace: dict = {}
    exec(compile(test, "docs/plugins.md", "exec"), namespace)
    namespace["test_echo_through_the_openai_sdk"](plughost_app)
