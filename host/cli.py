"""The ``plughost`` console script: points the Litestar CLI at ``host.app:create_app``.

``plughost`` alone runs the server; any arguments are passed to ``litestar`` unchanged
(``plughost run --reload``). The bind address and port default to ``server.host`` and
``server.port`` of the config (127.0.0.1:15530), through Litestar's ``LITESTAR_HOST`` and
``LITESTAR_PORT``; command-line flags and those variables, when set, win.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Set ``LITESTAR_APP`` (and host/port defaults) and hand over to the Litestar CLI."""
    from host.config import load_config

    server = load_config().server
    os.environ.setdefault("LITESTAR_APP", "host.app:create_app")
    os.environ.setdefault("LITESTAR_HOST", server.host)
    os.environ.setdefault("LITESTAR_PORT", str(server.port))
    args = sys.argv[1:] or ["run"]
    from litestar.cli.main import litestar_group

    litestar_group.main(args=args, prog_name="plughost")


if __name__ == "__main__":
    main()
