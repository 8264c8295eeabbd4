"""The ``plughost`` console script: serves with plughost's limits, or hands over to the Litestar CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host import cli


def test_runs_on_the_configured_host_and_port(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "plugins.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n  port: 16000\nplugins:\n  paths: []\n")
    monkeypatch.setenv("PLUGHOST_CONFIG", str(config))
    for var in ("LITESTAR_APP", "LITESTAR_HOST", "LITESTAR_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "argv", ["plughost"])
    seen = {}

    def fake_main(args, prog_name):
        seen.update(
            args=args,
            prog=prog_name,
            app=os.environ.get("LITESTAR_APP"),
            bind=(os.environ.get("LITESTAR_HOST"), os.environ.get("LITESTAR_PORT")),
        )

    from litestar.cli.main import litestar_group

    monkeypatch.setattr(litestar_group, "main", fake_main)
    monkeypatch.setattr(sys, "argv", ["plughost", "run", "--reload"])  # flags pass through, bind still from config
    cli.main()
    assert seen == {
        "args": ["run", "--reload"],
        "prog": "plughost",
        "app": "host.app:create_app",
        "bind": ("0.0.0.0", "16000"),
    }


def test_plain_plughost_serves_with_the_connection_limits(tmp_path: Path, monkeypatch) -> None:
    """``plughost`` alone (and ``plughost serve``) runs uvicorn itself, with the header deadline that
    Litestar's ``run`` cannot set (issue 12, finding 6), bound as the config or the flags say."""
    import uvicorn

    from host.server.runner import HeaderTimeoutH11Protocol

    config = tmp_path / "plugins.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n  port: 16000\n  header_timeout_s: 3\nplugins:\n  paths: []\n")
    monkeypatch.setenv("PLUGHOST_CONFIG", str(config))
    ran = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: ran.append(self.config))
    for argv, bind in [
        (["plughost"], ("0.0.0.0", 16000)),
        (["plughost", "serve", "--port", "17000"], ("0.0.0.0", 17000)),
    ]:
        monkeypatch.setattr(sys, "argv", argv)
        cli.main()
        used = ran.pop()
        assert (used.host, used.port) == bind
        assert issubclass(used.http, HeaderTimeoutH11Protocol) and used.http.header_timeout_s == 3


def test_console_script_is_installed_and_hands_over_to_litestar() -> None:
    script = shutil.which("plughost", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("plughost is not installed as a distribution in this environment")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "run" in out.stdout
