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

from .atlas import check_health
from .pgwire import PgWireError, check_login

__all__ = ["probe"]


def probe(services: Mapping[str, Mapping[str, Any]]) -> dict[str, bool]:
    """Health of every service entry of a bundle."""
    health: dict[str, bool] = {}
    for name, entry in services.items():
        if name == "atlas":
            health[name] = check_health(entry["host"], entry["port"], token=entry.get("token"), timeout=3.0)
        elif name == "postgres":
            try:
                password = Path(entry["password_file"]).read_text().strip()
                check_login(host=entry["host"], port=entry["port"], user=entry["user"], password=password,
                            database=entry["database"], timeout=3.0)  # fmt: skip
                health[name] = True
            except (OSError, PgWireError):
                health[name] = False
    return health


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    bundle = json.loads(Path(args[0]).read_text())
    print(json.dumps(probe(bundle["services"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
