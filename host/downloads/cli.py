"""``plughost pull [MODEL ...|--all]``, ``plughost models`` and ``plughost rm MODEL``.

MODEL is a model id or alias from the configuration, or a hub id (``Qwen/Qwen3-Embedding-0.6B``).
Every failure prints one clear line per model and exits non-zero (see :mod:`host.downloads.errors`
for the codes: 3 unreachable, 4 not found or refused, 5 verification, 6 disk space, 7 offline mode).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

import msgspec

from host.contract.config import HostConfig, WeightsRef, is_hub_id
from host.downloads.errors import PullError
from host.downloads.pull import PullProgress, pull, size_text
from host.downloads.store import ModelStore, describe, free_bytes

#: Printed after network failures: what to do on a machine that cannot reach any hub.
NO_NETWORK_HINT = (
    "No network, or the hubs are blocked? Set HF_ENDPOINT to a mirror (https://hf-mirror.com), use "
    "download.source: modelscope, or copy a model folder here and set models.<id>.weights to it. "
    "The demo profile (scripts/serve) needs no weights."
)


@dataclass(frozen=True)
class Target:
    """A model to pull: its id (or the repo, for a bare hub id) and what to fetch."""

    name: str
    ref: WeightsRef


def run(config: HostConfig, argv: list[str], out: TextIO | None = None) -> int:
    """Run one of the subcommands; returns the exit status."""
    out = out or sys.stdout
    command, rest = argv[0], argv[1:]
    if command == "pull":
        return _pull(config, rest, out)
    if command == "models":
        return _models(config, rest, out)
    return _rm(config, rest, out)


def _registry(config: HostConfig) -> Any:
    import logging

    from host.plugins import make_plugin_manager
    from host.registry import build_registry

    # Serving's warnings (a demo stand-in for weights not on disk) are what this command is about to fix.
    logging.getLogger("plughost.registry").setLevel(logging.ERROR)
    return build_registry(make_plugin_manager(config), config)


def _targets(config: HostConfig, names: list[str], every: bool) -> list[Target]:
    from host.contract.errors import ModelNotFound

    registry = _registry(config)
    if every:
        return [Target(m.spec.id, m.weights_ref) for m in registry if m.weights_ref is not None]
    targets = []
    for name in names:
        try:
            model = registry.get(name)
        except ModelNotFound:
            if is_hub_id(name):
                targets.append(Target(name, WeightsRef(repo=name)))
                continue
            known = ", ".join(m.spec.id for m in registry) or "none"
            raise PullError(f"{name}: no such model (configured: {known}) and not a hub id (owner/name)") from None
        if model.weights_ref is None:
            raise PullError(
                f"{model.spec.id}: its weights are not from a hub (models.{model.spec.id}.weights is a local "
                f"folder or a demo model); nothing to pull"
            )
        targets.append(Target(model.spec.id, model.weights_ref))
    return targets


def _pull(config: HostConfig, argv: list[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(prog="plughost pull", description="Download model weights into download.dir.")
    parser.add_argument("models", nargs="*", help="model ids or aliases from the config, or hub ids (owner/name)")
    parser.add_argument("--all", action="store_true", help="every configured model whose weights come from a hub")
    parser.add_argument("--source", choices=["auto", "huggingface", "modelscope"], help="override the source")
    parser.add_argument("--revision", help="a branch, tag or commit (default: the configured one, else the newest)")
    parser.add_argument("--force", action="store_true", help="download again even if a complete folder is there")
    ns = parser.parse_args(argv)
    if not ns.models and not ns.all:
        parser.error("name the models to pull, or --all")
    root = config.models_dir()
    try:
        targets = _targets(config, ns.models, ns.all)
    except PullError as exc:
        print(f"plughost pull: {exc}", file=sys.stderr)
        return 2
    if not targets:
        print("plughost pull: no configured model has weights from a hub; nothing to do", file=out)
        return 0
    failed: list[PullError] = []
    for target in targets:
        ref = msgspec.structs.replace(
            target.ref, source=ns.source or target.ref.source, revision=ns.revision or target.ref.revision
        )
        display = _Display(target.name, out)
        try:
            installed = pull(ref, config.download, root, model=target.name, report=display.show, force=ns.force)
        except PullError as exc:
            display.close()
            print(f"{target.name}: FAILED: {exc}", file=sys.stderr)
            failed.append(exc)
            continue
        except KeyboardInterrupt:
            display.close()
            print(f"{target.name}: interrupted; what was downloaded is kept, pull again to resume", file=sys.stderr)
            return 130
        display.close()
        print(
            f"{target.name}: ready in {installed.folder} ({size_text(installed.bytes)}, {installed.source} "
            f"{installed.commit or installed.revision})",
            file=out,
        )
    if failed:
        from host.downloads.errors import Offline, Unreachable

        if any(isinstance(f, (Unreachable, Offline)) for f in failed):
            print(NO_NETWORK_HINT, file=sys.stderr)
        return failed[0].exit_code
    return 0


class _Display:
    """Progress of one pull: a rich bar on a terminal, else a line every few seconds."""

    def __init__(self, name: str, out: TextIO) -> None:
        self.name, self.out = name, out
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._state = ""
        self._lock = threading.Lock()
        if out.isatty():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(name, total=None)

    def show(self, p: PullProgress) -> None:
        """Render one snapshot."""
        with self._lock:
            if self._bar is not None:
                total = p.total_bytes or None
                self._bar.update(self._task, total=total, completed=p.done_bytes, description=f"{p.model} {p.state}")
                return
            now = time.monotonic()
            if p.state == self._state and now - self._last < 2.0:
                return
            self._last, self._state = now, p.state
            rate = f", {size_text(p.bytes_per_s)}/s" if p.bytes_per_s else ""
            eta = f", ETA {_clock(p.eta_s)}" if p.eta_s is not None and p.state == "downloading" else ""
            source = f" from {p.source}" if p.source else ""
            sizes = ""
            if p.total_bytes:
                sizes = f": {size_text(p.done_bytes)} / {size_text(p.total_bytes)} ({p.percent:.1f}%)"
            print(f"{p.model}: {p.state}{source}{sizes}{rate}{eta}", file=self.out, flush=True)

    def close(self) -> None:
        """Stop the bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _models(config: HostConfig, argv: list[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(prog="plughost models", description="What weights are on this machine.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    ns = parser.parse_args(argv)
    from host.downloads.inventory import weights_info

    root = config.models_dir()
    store = ModelStore(root)
    registry = _registry(config)
    rows = [{"model": m.spec.id, **msgspec.to_builtins(weights_info(m, store))} for m in registry]
    used = {r.get("path") for r in rows}
    others = [describe(i) for i in store.inventory() if str(i.folder) not in used]
    if ns.json:
        out.write(msgspec.json.encode({"dir": str(root), "models": rows, "other_folders": others}).decode() + "\n")
        return 0
    print(f"download.dir: {root} ({size_text(free_bytes(root))} free)", file=out)
    header = ("MODEL", "STATE", "SIZE", "SOURCE", "REVISION", "WHERE")
    table = [header]
    for r in rows:
        size = size_text(r["bytes"]) if r.get("bytes") else "-"
        revision = (r.get("commit") or r.get("revision") or "-")[:12]
        where = r.get("path") or r.get("repo") or "-"
        table.append((r["model"], r["state"], size, r.get("source") or "-", revision, where))
    for o in others:
        revision = (o["commit"] or o["revision"])[:12]
        table.append(("(not configured)", "on_disk", size_text(o["bytes"]), o["source"], revision, o["folder"]))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)
    return 0


def _rm(config: HostConfig, argv: list[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(prog="plughost rm", description="Delete a pulled model folder.")
    parser.add_argument("models", nargs="+", help="model ids or aliases from the config, or hub ids")
    ns = parser.parse_args(argv)
    try:
        targets = _targets(config, ns.models, False)
    except PullError as exc:
        print(f"plughost rm: {exc}", file=sys.stderr)
        return 2
    store = ModelStore(config.models_dir())
    status = 0
    for target in targets:
        kept = store.staging_bytes(target.ref.repo)
        removed = store.remove(target.ref.repo)
        if removed is None and not kept:
            print(f"{target.name}: nothing pulled for {target.ref.repo} in {store.root}", file=sys.stderr)
            status = 1
            continue
        freed = (removed.bytes if removed else 0) + kept
        print(f"{target.name}: removed {target.ref.repo} ({size_text(freed)} freed)", file=out)
    return status
