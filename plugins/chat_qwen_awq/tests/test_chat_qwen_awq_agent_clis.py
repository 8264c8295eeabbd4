"""Agent CLIs that users point at local servers, run for real against ``plughost serve`` (slow
tier, CI runs it: ``host.testing.agent_clis`` installs the pinned CLIs once with npm, ~400 MB for
Codex's platform binary, and skips saying why where node, npm or the registry is missing).

The Codex CLI (``@openai/codex``, pinned in ``tests/clis/``) talks to ``/v1/responses``
through a custom model provider (``wire_api = "responses"``), configured as docs/api.md says. Its
own instructions and tools are a ~14,000-token prompt, so the chat model is the demo stand-in at
a 32k-position shape (same builder, same seed; the default stand-in has 2,048 positions). A
random-weight model never ends a free-text answer, so the prompt goes with ``--output-schema``
(Codex sends it as ``text.format``): the grammar makes the answer a complete JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from chat_qwen_awq.testing import MODEL_ID, PLUGIN_ROOT
from host.testing.agent_clis import agent_cli
from host.testing.server import free_port, wait_until_healthy

KEY = "sk-plughost-codex"
ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}

pytestmark = pytest.mark.slow


def long_context_stand_in() -> Path:
    """The chat model's demo stand-in with 32,768 positions (its context is then 16,384 tokens)."""
    from chat_qwen_awq.demo import TINY_AWQ
    from host.demo.shapes import TINY_QWEN2

    return TINY_AWQ.with_shape(dataclasses.replace(TINY_QWEN2, max_position_embeddings=32768)).folder()


@pytest.fixture(scope="module")
def plughost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``plughost serve`` (the console script's code) of the demo models on 127.0.0.1, with an API
    key; yields its base URL and its log file (uvicorn's access log included)."""
    work = tmp_path_factory.mktemp("plughost")
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "api_keys": [KEY]},
        "plugins": {"paths": [str(PLUGIN_ROOT.parent)], "entry_points": False},
        "models": {MODEL_ID: {"weights": str(long_context_stand_in())}},
    }
    (work / "plugins.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    log = work / "server.log"
    env = {**os.environ, "PLUGHOST_CONFIG": str(work / "plugins.yaml")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "host.cli", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
        yield url, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def codex_home(folder: Path, url: str) -> Path:
    """A ``CODEX_HOME`` whose config.toml is the one docs/api.md shows."""
    folder.mkdir()
    (folder / "config.toml").write_text(
        f'model = "{MODEL_ID}"\n'
        'model_provider = "plughost"\n'
        'web_search = "disabled"\n\n'
        "[agents]\nenabled = false\n\n"
        "[model_providers.plughost]\n"
        'name = "plughost"\n'
        f'base_url = "{url}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "PLUGHOST_API_KEY"\n',
        encoding="utf-8",
    )
    return folder


@pytest.fixture(scope="module")
def codex() -> list[str]:
    """The pinned Codex CLI (installed with npm on first use)."""
    return agent_cli("codex", "@openai/codex")


def test_codex_exec_completes_against_plughost(codex: list[str], plughost: tuple[str, Path], tmp_path: Path) -> None:
    url, log = plughost
    schema, last, work = tmp_path / "answer.json", tmp_path / "last.txt", tmp_path / "work"
    schema.write_text(json.dumps(ANSWER), encoding="utf-8")
    work.mkdir()
    env = {
        **os.environ,
        "CODEX_HOME": str(codex_home(tmp_path / "codex-home", url)),
        "PLUGHOST_API_KEY": KEY,
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [
            *codex,
            "exec",
            "--skip-git-repo-check",
            "--ephemeral",
            "--output-schema",
            str(schema),
            "--output-last-message",
            str(last),
            "-C",
            str(work),
            "Is the sky blue? Answer yes or no.",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    server_log = log.read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- server log ---\n{server_log}"
    jsonschema.validate(json.loads(last.read_text(encoding="utf-8")), ANSWER)
    answered = re.findall(r'"POST /v1/responses HTTP/1\.1" (\d{3})', server_log)
    assert answered and set(answered) == {"200"}, server_log
