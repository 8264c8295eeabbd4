"""The ``plughost`` console script.

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

from host.contract.config import HostConfig, load_config


def main() -> None:
    """Serve (no arguments, or ``serve``), or hand over to the Litestar CLI."""
    config = load_config()
    args = sys.argv[1:]
    if not args or args[0] == "serve":
        serve(config, args[1:])
        return
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
