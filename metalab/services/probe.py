"""``python -m metalab.services.probe BUNDLE``: does each service in a bundle answer?

Run where the services are reachable (the login node, possibly over SSH from a workstation);
prints ``{"postgres": true, "atlas": false}``. A real login for PostgreSQL, ``/api/health``
(with the token) for Atlas; no secret is printed or put on a command line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import PgWireError
from .atlas import check_health
from .pgwire import check_login

__all__ = ["probe"]


def probe(services: Mapping[str, Mapping[str, Any]], *, timeout: float = 3.0) -> dict[str, bool]:
    """Health of every service entry of a bundle, all asked at once (each waits on the network)."""
    import threading  # (concurrent.futures would cost more to import than it saves)

    health = dict.fromkeys(services, False)

    def check(name: str) -> None:
        health[name] = _answers(name, services[name], timeout)

    threads = [threading.Thread(target=check, args=(name,)) for name in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return health


def _answers(name: str, entry: Mapping[str, Any], timeout: float) -> bool:
    if name == "atlas":
        return check_health(entry["host"], entry["port"], token=entry.get("token"), timeout=timeout)
    if name == "postgres":
        try:
            password = Path(entry["password_file"]).read_text().strip()
            check_login(host=entry["host"], port=entry["port"], user=entry["user"], password=password,
                        database=entry["database"], timeout=timeout)
        except (OSError, PgWireError):
            return False
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    bundle = json.loads(Path(args[0]).read_text())
    print(json.dumps(probe(bundle["services"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
