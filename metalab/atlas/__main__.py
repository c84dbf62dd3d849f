"""``python -m metalab.atlas --host H --port P``: serve Atlas; settings arrive on stdin."""

from __future__ import annotations

import argparse
import sys


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m metalab.atlas", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    import uvicorn

    from ..net import is_loopback
    from .app import create_app
    from .settings import read_settings

    settings = read_settings(sys.stdin)
    sys.stdin.close()
    if settings.token is None and not is_loopback(args.host):
        parser.error(f"--host {args.host} is not loopback: Atlas needs an access token in its settings there")
    uvicorn.run(create_app(settings, served_as=args.host), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
