"""The ``plughost`` console script.

``plughost pull [MODEL ...|--all]``, ``plughost models`` and ``plughost rm MODEL`` manage the
weights on this machine (:mod:`host.downloads.cli`).

``plughost`` alone (or ``plughost serve [--host H] [--port P]``) serves ``create_app()`` with
uvicorn under plughost's connection limits (:mod:`host.server.runner`: header and keep-alive deadlines),
bound to ``server.host``:``server.port`` of the config (127.0.0.1:15530) unless the flags say
otherwise. Any other arguments go to the Litestar CLI unchanged (``plughost run --reload`` for
development, ``plughost routes``), with ``LITESTAR_APP`` and the bind address set from the config;
Litestar's ``run`` has no header deadline, so production uses ``plughost``/``plughost serve``.
"""

from __future__ import annotations

import argparse
import os
import sys

from host.contract.config import ConfigError, HostConfig, load_config


def main() -> None:
    """Serve (no arguments, or ``serve``), manage weights (``pull``, ``models``, ``rm``), or hand over
    to the Litestar CLI."""
    args = sys.argv[1:]
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"plughost: {exc}", file=sys.stderr)
        sys.exit(2)
    if not args or args[0] == "serve":
        serve(config, args[1:])
        return
    if args[0] in ("pull", "models", "rm"):
        from host.downloads.cli import run

        sys.exit(run(config, args))
    os.environ.setdefault("LITESTAR_APP", "host.app:create_app")
    os.environ.setdefault("LITESTAR_HOST", config.server.host)
    os.environ.setdefault("LITESTAR_PORT", str(config.server.port))
    from litestar.cli.main import litestar_group

    litestar_group.main(args=args, prog_name="plughost")


def serve(config: HostConfig, argv: list[str]) -> None:
    """Run the app with uvicorn and plughost's limits until interrupted."""
    import msgspec
    import uvicorn

    from host.app import create_app
    from host.server.runner import uvicorn_config

    parser = argparse.ArgumentParser(prog="plughost serve", description="Serve the configured models.")
    parser.add_argument("--host", default=config.server.host, help="bind address (default: server.host)")
    parser.add_argument("--port", type=int, default=config.server.port, help="port (default: server.port)")
    ns = parser.parse_args(argv)
    server = msgspec.structs.replace(config.server, host=ns.host, port=ns.port)
    config = msgspec.structs.replace(config, server=server)
    uvicorn.Server(uvicorn_config(create_app(config), server)).run()


if __name__ == "__main__":
    main()
