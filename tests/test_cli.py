"""The ``plughost`` console script: a thin hand-over to the Litestar CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host import cli


def test_no_arguments_runs_on_the_configured_host_and_port(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "plugins.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n  port: 16000\nplugins:\n  paths: []\n")
    monkeypatch.setenv("PLUGHOST_CONFIG", str(config))
    monkeypatch.delenv("LITESTAR_APP", raising=False)
    monkeypatch.setattr(sys, "argv", ["plughost"])
    seen = {}

    def fake_main(args, prog_name):
        seen.update(args=args, prog=prog_name, app=os.environ.get("LITESTAR_APP"))

    from litestar.cli.main import litestar_group

    monkeypatch.setattr(litestar_group, "main", fake_main)
    cli.main()
    assert seen == {"args": ["run", "--host", "0.0.0.0", "--port", "16000"], "prog": "plughost",
                    "app": "host.app:create_app"}


def test_console_script_is_installed_and_hands_over_to_litestar() -> None:
    script = shutil.which("plughost", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("plughost is not installed as a distribution in this environment")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "run" in out.stdout
