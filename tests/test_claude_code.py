"""Claude Code (the npm package ``@anthropic-ai/claude-code``, pinned in ``tests/clis``) against a
real ``plughost serve`` in the demo profile: ``claude -p`` completes with exit 0 and the server's
access log shows its requests to ``/v1/messages`` answered 200.

Slow tier (CI runs it): ``host.testing.agent_clis`` installs the pinned CLIs once (npm ci, cached
in ``~/.cache/plughost/npm``); it skips, saying why, where node, npm or the registry is missing.

How it stays deterministic on a random-weight model: Claude Code keeps asking to continue while an
answer ends at ``max_tokens``, and a random model ends its text when it happens to sample its end
token. ``CLAUDE_CODE_EXTRA_BODY`` (Claude Code's own switch for extra request fields) asks for
structured output (``output_config.format``), which the grammar closes within a few tokens, so
every answer ends with ``end_turn``. The demo model's context is 2048 tokens: ``--bare`` and
``--system-prompt`` keep Claude Code's prompt within it, ``--tools Read`` still sends a tool.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.testing.agent_clis import agent_cli
from host.testing.server import free_port, wait_until_healthy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHAT = "Qwen2.5-7B-Instruct-AWQ"
KEY = "sk-plughost-claude-code"
ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 12}},
    "required": ["answer"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def claude() -> list[str]:
    return agent_cli("claude", "@anthropic-ai/claude-code")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``plughost serve`` in the demo profile with an API key; yields its URL and its log file."""
    tmp = tmp_path_factory.mktemp("claude-code-server")
    port = free_port()
    config = tmp / "plugins.yaml"
    config.write_text(
        f"demo: true\nplugins:\n  paths: [{ROOT / 'plugins'}]\n  entry_points: false\nbudgets:\n  gpus: []\n"
        f"server:\n  host: 127.0.0.1\n  port: {port}\n  api_keys: [{KEY}]\n  stream_keepalive_s: 0.5\n"
    )
    env = {**os.environ, "PLUGHOST_CONFIG": str(config), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "host.cli", "serve"], cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc)
    except RuntimeError as exc:
        proc.kill()
        pytest.fail(f"{exc}:\n{log.read_text()}")
    yield url, log
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _claude(
    command: list[str], url: str, tmp: Path, auth: dict[str, str], *flags: str
) -> subprocess.CompletedProcess[str]:
    """``claude -p`` in an empty home and work folder, pointed at ``url``."""
    (tmp / "home").mkdir(exist_ok=True)
    (tmp / "work").mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp / "home"),
        "ANTHROPIC_BASE_URL": url,
        **auth,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64",  # the demo model's context is 2048 tokens
        "CLAUDE_CODE_EXTRA_BODY": json.dumps({"output_config": {"format": {"type": "json_schema", "schema": ANSWER}}}),
    }
    args = ["-p", "--model", CHAT, "--tools", "Read", "--system-prompt", "Answer in one JSON object."]
    return subprocess.run(
        [*command, *args, *flags, "--output-format", "json", "Say hi"],
        cwd=tmp / "work",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _messages_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if '"POST /v1/messages' in line]


@pytest.mark.parametrize(
    ("auth", "flags"),
    [
        ({"ANTHROPIC_API_KEY": KEY}, ("--bare",)),  # sent as x-api-key
        ({"ANTHROPIC_AUTH_TOKEN": KEY}, ()),  # sent as Authorization: Bearer
    ],
    ids=["api-key", "auth-token"],
)
def test_claude_print_completes_against_plughost(
    claude: list[str], server: tuple[str, Path], tmp_path: Path, auth: dict[str, str], flags: tuple[str, ...]
) -> None:
    url, log = server
    before = len(_messages_lines(log))
    done = _claude(claude, url, tmp_path, auth, *flags)
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}\nserver log:\n{log.read_text()[-4000:]}"
    result = json.loads(done.stdout)
    assert result["type"] == "result" and result["is_error"] is False and result["stop_reason"] == "end_turn"
    assert set(json.loads(result["result"])) == {"answer"}
    assert result["usage"]["input_tokens"] > 0
    lines = _messages_lines(log)[before:]
    assert lines, log.read_text()
    assert all(re.search(r'"POST /v1/messages\S* HTTP/1\.1" 200', line) for line in lines), lines
