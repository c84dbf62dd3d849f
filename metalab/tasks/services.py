"""``services`` tasks: the provisioning chain, and ``up``/``status``/``down`` that compose it.

Each step runs alone (``inv services.provision-postgres --env local``) and adopts what is
already running, so steps chain across invocations too; ``up`` runs them in order under one
lock. A user's tasks file can depend on them: ``@task(pre=[services.up])``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Exit

from ._common import emit_json, is_dry, metalab_task, resolved_environment

__all__ = [
    "down",
    "logs",
    "provision_atlas",
    "provision_postgres",
    "psql",
    "resolve_config",
    "services_collection",
    "status",
    "up",
    "url",
    "write_bundle",
]

ENV_HELP = "Environment profile (default: METALAB_ENV, then default_env)."
QUIET_HELP = "Print only warnings and errors."


def _environment(c, env: str | None, quiet: bool = False):
    from ..lifecycle import open_environment
    from ..progress import Progress

    return open_environment(resolved_environment(c, env), progress=Progress(quiet=quiet), dry=is_dry(c))


@contextmanager
def _step(environment) -> Iterator[None]:
    """Run one provisioning step under the bundle lock; undo what it started if it fails."""
    from .. import bundle
    from ..lifecycle import report_lock_wait

    if environment.dry:
        yield
        return
    with bundle.lock(environment.bundle_path, on_wait=report_lock_wait(environment)):
        try:
            yield
        except BaseException:
            environment.rollback()
            raise
        environment.commit()


@metalab_task(help={"env": ENV_HELP})
def resolve_config(c, env=None):
    """Resolve and print the environment profile and the services it declares."""
    from ..environments.base import declared_services

    resolved = resolved_environment(c, env)
    names = ", ".join(declared_services(resolved))
    print(f"environment {resolved.name} ({resolved.type}, selected by {resolved.selected_by}) "
          f"from {resolved.config_path}; services: {names}")


@metalab_task(help={"env": ENV_HELP, "quiet": QUIET_HELP})
def provision_postgres(c, env=None, quiet=False):
    """Start PostgreSQL for the profile (or adopt the one already running)."""
    from ..lifecycle import record_in_bundle

    environment = _environment(c, env, quiet)
    with _step(environment):
        record_in_bundle(environment, environment.provision_postgres())


@metalab_task(help={"env": ENV_HELP, "quiet": QUIET_HELP})
def provision_atlas(c, env=None, quiet=False):
    """Start Atlas against the profile's PostgreSQL (which must be declared)."""
    from ..errors import ConfigError

    environment = _environment(c, env, quiet)
    if environment.resolved.services.atlas is None:
        raise ConfigError(f"{environment.resolved.config_path}: [services.atlas] is not declared; add it to run Atlas")
    from ..lifecycle import record_in_bundle

    with _step(environment):
        record_in_bundle(environment, environment.provision_postgres())  # Atlas needs it: adopted when it runs
        record_in_bundle(environment, environment.provision_atlas())


@metalab_task(help={"env": ENV_HELP, "quiet": QUIET_HELP})
def write_bundle(c, env=None, quiet=False):
    """Record the running services in bundle.json (provisioning any that are missing)."""
    from ..lifecycle import provision
    from ..lifecycle import write_bundle as write

    environment = _environment(c, env, quiet)
    with _step(environment):
        write(environment, provision(environment))


@metalab_task(help={
    "env": ENV_HELP, "tunnel": "Open the SSH tunnel once the services are up.", "quiet": QUIET_HELP,
    "wait": "SLURM: seconds to wait for the job to leave the queue (default 3600).",
})
def up(c, env=None, tunnel=False, quiet=False, wait=None):
    """Provision the declared services, or reuse them when they are healthy."""
    from .. import lifecycle

    environment = _environment(c, env, quiet)
    if wait is not None:
        environment.queue_timeout = float(wait)
    outcome = lifecycle.up(environment)
    atlas = outcome.bundle.services.get("atlas")
    if atlas and not environment.dry and not quiet:
        token = f"/?token={atlas['token']}" if atlas.get("token") else ""
        reach = " (on the services node; `metalab tunnel` brings it to localhost)" if outcome.bundle.tunnel else ""
        print(f"Atlas: {atlas['url']}{token}{reach}")
    if outcome.bundle.store_locator and not environment.dry and not quiet:
        print(f"store: {outcome.bundle.store_locator}")
    if tunnel:
        from .tunnel import tunnel as open_tunnel

        open_tunnel(c, env=environment.resolved.name)


@metalab_task(help={"env": ENV_HELP, "json": "Print machine-readable JSON."})
def status(c, env=None, json=False):
    """Show each service's health; exit 0 healthy, 1 unhealthy, 3 nothing running."""
    from .. import lifecycle

    report = lifecycle.status(_environment(c, env, quiet=True))
    if json:
        emit_json(report.as_json())
    else:
        print(lifecycle.format_status(report))
    if report.exit_code:
        raise Exit(code=report.exit_code)


@metalab_task(help={"env": ENV_HELP, "quiet": QUIET_HELP})
def down(c, env=None, quiet=False):
    """Stop the services (Atlas first, then PostgreSQL), keep the data, remove the bundle."""
    from .. import lifecycle

    environment = _environment(c, env, quiet)
    stopped = lifecycle.down(environment)
    if not stopped and not environment.dry and not quiet:
        print(f"nothing was running for environment {environment.resolved.name}")


def _access(c, env):
    from .. import lifecycle
    from ..index_access import index_access

    environment = _environment(c, env, quiet=True)
    bundle = lifecycle.own_bundle(environment.resolved, environment.bundle_path)
    if bundle is None:
        from ..errors import NotFoundError

        raise NotFoundError(f"no services running for environment {environment.resolved.name} "
                            "(start them with `metalab services up`)")
    return index_access(bundle, environment.bundle_path)


@metalab_task(help={"env": ENV_HELP, "json": "Print machine-readable JSON."})
def url(c, env=None, json=False):
    """How to reach the index yourself: its locator, and the password file psql and pandas read."""
    access = _access(c, env)
    if json:
        emit_json(access.as_json())
        return
    print(access.locator)
    print(f"PGPASSFILE={access.pgpass_file}")
    print(f"  psql:   PGPASSFILE={access.pgpass_file} psql -h {access.host} -p {access.port} -U {access.user} -d {access.database}")
    print(f"  pandas: os.environ['PGPASSFILE'] = {access.pgpass_file!r}; "
          f"pandas.read_sql('SELECT * FROM metalab.runs', 'postgresql+psycopg://{access.user}@{access.host}:{access.port}/{access.database}')")


@metalab_task(help={"env": ENV_HELP, "command": "Run this SQL and exit, instead of an interactive session."})
def psql(c, env=None, command=None):
    """Open psql on the index (the password comes from its 0600 password file, never argv)."""
    from ..index_access import psql_argv

    access = _access(c, env)
    argv = psql_argv(access, os.environ, command)
    os.execve(argv[0], argv, {**os.environ, "PGPASSFILE": access.pgpass_file})


@metalab_task(
    help={"service": "postgres, atlas or (SLURM) job; all of them when left out", "env": ENV_HELP,
          "n": "how many lines from the end (default 40)", "follow": "keep printing what is added, until Ctrl+C"},
)
def logs(c, service=None, env=None, n=40, follow=False):
    """Show a service's log (the end of it, or following it), locally or on the cluster."""
    import time

    from .. import lifecycle
    from ..errors import UsageError

    environment = _environment(c, env, quiet=True)
    bundle = lifecycle.own_bundle(environment.resolved, environment.bundle_path)
    paths = environment.logs(bundle)
    if service is not None and service not in paths:
        raise UsageError(f"no log called {service!r}; the logs are: {', '.join(paths)}")
    chosen = {service: paths[service]} if service else paths
    scrub = _scrubber(bundle)
    seen: dict[str, int] = {}
    for name, path in chosen.items():
        text = environment.read_log(path) or ""
        seen[name] = len(text)
        if len(chosen) > 1:
            print(f"==> {name}: {path} <==")
        print(scrub("".join(text.splitlines(keepends=True)[-int(n):])), end="" if text.endswith("\n") or not text else "\n")
    try:
        while follow:
            time.sleep(0.5)
            for name, path in chosen.items():
                text = environment.read_log(path) or ""
                if len(text) > seen[name]:
                    print(scrub(text[seen[name]:]), end="", flush=True)
                seen[name] = len(text)
    except KeyboardInterrupt:
        return


def _scrubber(bundle):
    """Masks the services' secrets (password, token) should a log ever hold one."""
    from ..store.locator import read_password_file

    secrets: list[str] = []
    if bundle is not None:
        pg = bundle.services.get("postgres", {})
        try:
            password = read_password_file(Path(pg["password_file"])) if pg.get("password_file") else None
        except Exception:
            password = None
        if password is not None:
            secrets.append(password.reveal())
        token = bundle.services.get("atlas", {}).get("token")
        if token:
            secrets.append(token)

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return scrub


services_collection = Collection("services")
for _task in (resolve_config, provision_postgres, provision_atlas, write_bundle, up, status, down, url, psql, logs):
    services_collection.add_task(_task)
