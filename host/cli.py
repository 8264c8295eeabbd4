"""The ``plughost`` console script: points the Litestar CLI at ``host.app:create_app``.

``plughost`` alone runs the server on the configured host and port (127.0.0.1:15530 by
default); any arguments are passed to ``litestar`` unchanged (``plughost run --reload``).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Set ``LITESTAR_APP`` and hand over to the Litestar CLI."""
    os.environ.setdefault("LITESTAR_APP", "host.app:create_app")
    args = sys.argv[1:]
    if not args:
        from host.config import load_config

        server = load_config().server
        args = ["run", "--host", server.host, "--port", str(server.port)]
    from litestar.cli.main import litestar_group

    litestar_group.main(args=args, prog_name="plughost")


if __name__ == "__main__":
    main()
