"""Real agent CLIs for tests: the npm packages users point at local servers (Claude Code, the Codex
CLI), pinned in ``tests/clis/package-lock.json`` and installed once with ``npm ci`` into
``~/.cache/plughost/npm/<lockfile hash>`` (later runs reuse the folder).

``PLUGHOST_AGENT_CLIS`` may name a folder where the commands are installed already. Without node,
npm or the npm registry a test that asks for a CLI is skipped, saying why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

#: The lockfile of the CLIs (both packages in one install).
CLIS = Path(__file__).resolve().parents[2] / "tests" / "clis"


def agent_cli(command: str, package: str) -> list[str]:
    """The argv that runs ``command`` (from the npm ``package``), installing the pinned CLIs first
    if they are not cached; skips the test if they cannot be installed."""
    given = os.environ.get("PLUGHOST_AGENT_CLIS")
    if given and _runs([str(Path(given) / command)]):
        return [str(Path(given) / command)]
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(f"node and npm are needed to install {package} (npm ci in tests/clis)")
    lock = (CLIS / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plughost" / "npm"
    folder = cache / hashlib.sha256(lock).hexdigest()[:16]
    binary = folder / "node_modules" / ".bin" / command
    if not binary.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(CLIS / name, folder / name)
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            check=False,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            pytest.skip(f"npm could not install {package} (no registry?): {done.stderr.strip()[-500:]}")
    if _runs([str(binary)]):
        return [str(binary)]
    # npm left a placeholder binary (its install script did not run): the package's own wrapper.
    wrapper = folder / "node_modules" / package / "cli-wrapper.cjs"
    if wrapper.exists() and _runs([shutil.which("node") or "node", str(wrapper)]):
        return [shutil.which("node") or "node", str(wrapper)]
    pytest.fail(f"{package} is installed in {folder} but `{command} --version` fails")


def _runs(command: list[str]) -> bool:
    try:
        return subprocess.run([*command, "--version"], check=False, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
