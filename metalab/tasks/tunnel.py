"""``tunnel``: forward remote services to localhost over SSH (nothing to do for local ones)."""

from __future__ import annotations

import os

from invoke import Exit

from ._common import metalab_task, resolved_environment

__all__ = ["tunnel"]


@metalab_task(help={
    "env": "Environment profile (default: METALAB_ENV, then default_env).",
    "print": "Print the ssh command instead of running it.",
})
def tunnel(c, env=None, print_=False):
    """Open an SSH tunnel to the running services so they appear on localhost."""
    resolved = resolved_environment(c, env)
    if resolved.type == "local":
        print(f"environment {resolved.name} is local: its services already listen on this machine, nothing to tunnel")
        return
    from .. import bundle as bundles
    from .. import tunnel as tunnels
    from ..errors import NotFoundError
    from ..lifecycle import own_bundle

    path = bundles.bundle_path_for(resolved)
    found = own_bundle(resolved, path)
    if found is None:
        raise NotFoundError(f"no running services for environment {resolved.name} ({path}); run `metalab services up --env {resolved.name}`")
    if not found.tunnel:
        where = ", ".join(f"{name} at {entry['host']}:{entry['port']}" for name, entry in found.services.items())
        print(f"environment {resolved.name} has no gateway: its services are reachable from here directly ({where})")
        return
    pinned = {"atlas": resolved.services.atlas.port} if resolved.services.atlas and resolved.services.atlas.port else {}
    ports = tunnels.choose_local_ports(found.tunnel["forwards"], pinned)
    argv = tunnels.tunnel_command(found.tunnel, ports, os.environ)
    if print_:
        print(tunnels.printable(argv))
        return

    def announce() -> None:
        for forward in found.tunnel["forwards"]:
            planned, local = int(forward["local_port"]), ports[forward["service"]]
            moved = f" (port {planned} was taken)" if local != planned else ""
            if forward["service"] == "atlas":
                token = found.services["atlas"].get("token")
                print(f"Atlas: http://127.0.0.1:{local}/" + (f"?token={token}" if token else "") + moved)
            elif forward["service"] == "postgres":
                pg = found.services["postgres"]
                print(f"PostgreSQL: 127.0.0.1:{local} database {pg['database']} user {pg['user']}{moved}")
        print("tunnel open; press Ctrl+C to close it", flush=True)

    def answering(local_ports) -> bool:
        from ..services.probe import probe

        local = {name: {**found.services[name], "host": "127.0.0.1", "port": port} for name, port in local_ports.items()}
        return all(probe(local, timeout=2.0).values())

    code = tunnels.run_tunnel(argv, record_path=path.with_name(tunnels.RECORD_NAME), answering=answering, ports=ports,
                              on_ready=announce)
    if code:
        raise Exit(f"metalab: ssh exited with code {code}", code=1)
    print("tunnel closed")
