"""The ``local`` environment: PostgreSQL and Atlas as subprocesses on this machine."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..errors import MetalabError, PgWireError, UsageError
from ..net import free_port, port_is_free
from ..procs import process_age
from ..secret import Secret
from ..services import atlas, postgres
from ..services.pgwire import check_login
from .base import (
    RUNNING,
    STOPPED,
    UNHEALTHY,
    Orphan,
    Provisioned,
    ServiceEnvironment,
    ServiceState,
    start_order,
)

__all__ = ["LocalEnvironment"]

READY_TIMEOUT = 60.0
KILL_AFTER = 5.0


class StartError(MetalabError):
    """A service did not come up."""


class LocalEnvironment(ServiceEnvironment):
    """Services as detached subprocesses; state lives in the profile's services dir."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._plan: postgres.PostgresPlan | None = None
        self._password: Secret | None = None
        self._early_atlas: atlas.AtlasProcess | None = None
        self._atlas_token: Secret | None = None  # only with [services.atlas] require_token = true

    # -- PostgreSQL -----------------------------------------------------------------

    @property
    def pg_layout(self) -> postgres.PostgresLayout:
        return postgres.PostgresLayout(services_dir=self.services_dir)

    @property
    def atlas_layout(self) -> atlas.AtlasLayout:
        return atlas.AtlasLayout(services_dir=self.services_dir)

    def postgres_plan(self) -> postgres.PostgresPlan:
        """Binaries, OS user and port, decided once per invocation."""
        if self._plan is None:
            config = self.resolved.services.postgres
            layout = self.pg_layout
            self._plan = postgres.PostgresPlan(
                layout=layout,
                bin_dir=postgres.find_bin_dir(config.bin_dir, self.environ),
                port=self._postgres_port(layout),
                user=config.user or postgres.DEFAULT_USER,
                database=config.database or postgres.DEFAULT_DATABASE,
                auth_method=config.auth_method or postgres.DEFAULT_AUTH_METHOD,
                run_as=postgres.choose_run_as(config.run_as),
            )
        return self._plan

    def _postgres_port(self, layout: postgres.PostgresLayout) -> int:
        configured = self.resolved.services.postgres.port
        if configured:
            return configured
        running = postgres.find_running(layout)
        if running:
            return running.port
        remembered = postgres.remembered_port(layout)
        if remembered and port_is_free(postgres.LISTEN_HOST, remembered):
            return remembered
        return free_port(postgres.LISTEN_HOST)

    def password(self) -> Secret:
        if self._password is None:
            self._password = postgres.resolve_password(
                self.resolved.services.postgres.password, self.pg_layout, self.environ, create=not self.dry
            )
        return self._password

    def provision_postgres(self) -> Provisioned:
        plan = self.postgres_plan()
        if self.dry:
            return self._dry_postgres(plan)
        running = postgres.find_running(plan.layout)
        if running:
            if self._login_ok(plan, running.port):
                self.progress.line("postgres", f"adopted the server already running on {plan.layout.data_dir} (pid {running.pid})")
                return Provisioned(name="postgres", entry=self._pg_entry(plan, running), started=False)
            self.progress.warn("postgres", f"stopping unresponsive server (pid {running.pid}) on {plan.layout.data_dir}")
            postgres.stop(running, kill_after=KILL_AFTER)
        self._check_port(postgres.LISTEN_HOST, plan.port, "[services.postgres] port")
        password = self.password()
        postgres.sync_password_file(plan.layout, password)
        postgres.prepare_directories(plan)
        if not plan.layout.initialized():
            began = time.perf_counter()
            postgres.initialize(plan)
            self.progress.line("postgres", f"initialised {plan.layout.data_dir}", time.perf_counter() - began)
        postgres.write_config_files(plan)
        began = time.perf_counter()
        running = postgres.start_server(plan, timeout=READY_TIMEOUT)
        started = self.remember(Provisioned(name="postgres", entry=self._pg_entry(plan, running), started=True))
        postgres.run_checked(plan, plan.psql_command(), what="creating the role and database", stdin=plan.setup_sql(password))
        self._wait_for_login(plan)
        owner = f", as OS user {plan.run_as} (PostgreSQL refuses to run as root)" if plan.run_as else ""
        self.progress.line(
            "postgres",
            f"ready on {postgres.LISTEN_HOST}:{plan.port}, database {plan.database}{owner} (pid {running.pid})",
            time.perf_counter() - began,
        )
        return started

    def _pg_entry(self, plan: postgres.PostgresPlan, running: postgres.RunningPostgres) -> dict[str, Any]:
        return {
            "host": postgres.LISTEN_HOST,
            "port": running.port,
            "pid": running.pid,
            "pid_start": running.start,
            "database": plan.database,
            "user": plan.user,
            "data_dir": str(plan.layout.data_dir),
            "password_file": str(plan.layout.password_file),
        }

    def _login_ok(self, plan: postgres.PostgresPlan, port: int) -> bool:
        try:
            check_login(host=postgres.LISTEN_HOST, port=port, user=plan.user, password=self.password().reveal(),
                        database=plan.database, timeout=2.0)
        except PgWireError:
            return False
        return True

    def _wait_for_login(self, plan: postgres.PostgresPlan) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                check_login(host=postgres.LISTEN_HOST, port=plan.port, user=plan.user,
                            password=self.password().reveal(), database=plan.database, timeout=2.0)
                return
            except PgWireError as error:
                if time.monotonic() > deadline:
                    raise StartError(f"PostgreSQL did not accept a login within {READY_TIMEOUT:.0f} s: {error}") from None
                time.sleep(0.05)

    def _dry_postgres(self, plan: postgres.PostgresPlan) -> Provisioned:
        show = self.progress.line
        if not plan.layout.initialized():
            show("postgres", "would run: " + plan.describe(plan.initdb_command(plan.layout.data_dir)))
        show("postgres", f"would write {plan.layout.data_dir / postgres.CONF_NAME}:\n{plan.conf_text()}")
        show("postgres", f"would write {plan.layout.data_dir / 'pg_hba.conf'}:\n{plan.hba_text()}")
        show("postgres", "would start: " + plan.describe(plan.server_command()))
        sql = _mask_verifiers(plan.setup_sql(self.password()))
        show("postgres", "would run: " + plan.describe(plan.psql_command()) + " with:\n" + sql)
        entry = {"host": postgres.LISTEN_HOST, "port": plan.port, "pid": 0, "database": plan.database, "user": plan.user,
                 "data_dir": str(plan.layout.data_dir), "password_file": str(plan.layout.password_file)}
        return Provisioned(name="postgres", entry=entry, started=False)

    # -- Atlas ----------------------------------------------------------------------

    def atlas_port(self) -> int:
        return self.resolved.services.atlas.port or atlas.DEFAULT_PORT

    def preflight(self) -> None:
        """The configured ports are free, unless this profile's own services hold them: checked
        before the services folder, a password file or a data directory is made."""
        pg = self.resolved.services.postgres
        ours_pg = postgres.find_running(self.pg_layout)
        if pg is not None and pg.port and (ours_pg is None or ours_pg.port != pg.port):
            self._check_port(postgres.LISTEN_HOST, pg.port, "[services.postgres] port")
        if self.resolved.services.atlas is not None:
            ours_atlas = atlas.find_running(self.atlas_layout)
            if ours_atlas is None or ours_atlas.port != self.atlas_port():
                self._check_port(atlas.LISTEN_HOST, self.atlas_port(), "[services.atlas] port")

    def head_start(self) -> None:
        """Spawn Atlas now: it imports its web stack while PostgreSQL initialises."""
        if self.dry or self.resolved.services.atlas is None or atlas.find_running(self.atlas_layout):
            return
        if postgres.find_running(self.pg_layout):
            return  # an adoptable server: provision_atlas checks it first
        self._early_atlas = self._spawn_atlas(self.postgres_plan())

    def _spawn_atlas(self, plan: postgres.PostgresPlan) -> atlas.AtlasProcess:
        from ..atlas.settings import AtlasSettings, settings_document

        port = self.atlas_port()
        self._check_port(atlas.LISTEN_HOST, port, "[services.atlas] port")
        if self.resolved.services.atlas.require_token:
            import secrets

            self._atlas_token = Secret(secrets.token_urlsafe(32))
        settings = AtlasSettings(
            db_host=postgres.LISTEN_HOST, db_port=plan.port, db_user=plan.user, db_name=plan.database,
            db_password=self.password(), file_root=str(self.records_root),
            token=self._atlas_token,
        )
        process = atlas.spawn(self.atlas_layout, host=atlas.LISTEN_HOST, port=port, settings_json=settings_document(settings))
        self.remember(Provisioned(name="atlas", entry=self._atlas_entry(process), started=True))
        return process

    def provision_atlas(self) -> Provisioned:
        port = self.atlas_port()
        if self.dry:
            self.progress.line("atlas", "would run: " + " ".join(atlas.command(atlas.LISTEN_HOST, port))
                               + " (database settings on its stdin)")
            entry = {"host": atlas.LISTEN_HOST, "port": port, "pid": 0, "url": f"http://{atlas.LISTEN_HOST}:{port}"}
            return Provisioned(name="atlas", entry=entry, started=False)
        began = time.perf_counter()
        process = self._early_atlas or atlas.find_running(self.atlas_layout)
        if process is not None and process is not self._early_atlas:
            if process.port == port and atlas.check_health(process.host, process.port):
                self.progress.line("atlas", f"adopted the Atlas already running at {process.url} (pid {process.pid})")
                return Provisioned(name="atlas", entry=self._atlas_entry(process), started=False)
            self.progress.warn("atlas", f"stopping unresponsive Atlas (pid {process.pid})")
            process.stop(kill_after=KILL_AFTER)
            process = None
        if process is None:
            process = self._spawn_atlas(self.postgres_plan())
        self._wait_for_atlas(process)
        self.progress.line("atlas", f"ready at {process.url} (pid {process.pid})", time.perf_counter() - began)
        return Provisioned(name="atlas", entry=self._atlas_entry(process), started=True)

    def _atlas_entry(self, process: atlas.AtlasProcess) -> dict[str, Any]:
        entry = {"host": process.host, "port": process.port, "pid": process.pid, "pid_start": process.start, "url": process.url}
        if self._atlas_token is not None:
            entry["token"] = self._atlas_token.reveal()  # the bundle is 0600; status and `up` need it
        return entry

    def _wait_for_atlas(self, process: atlas.AtlasProcess) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        token = self._atlas_token.reveal() if self._atlas_token else None
        while not atlas.check_health(process.host, process.port, token=token, timeout=1.0):
            if not process.alive():
                raise StartError(f"Atlas exited during start-up: {_last_line(self.atlas_layout.log_file)} "
                                 f"(log: {self.atlas_layout.log_file})")
            if time.monotonic() > deadline:
                raise StartError(f"Atlas did not answer /api/health within {READY_TIMEOUT:.0f} s; see {self.atlas_layout.log_file}")
            time.sleep(0.03)

    # -- checking and stopping ------------------------------------------------------

    def states(self, bundle) -> list[ServiceState]:
        from ..services.probe import probe

        names = start_order(bundle.services)
        running = {name: self._running(name, bundle.services[name]) for name in names}
        healthy = probe({name: bundle.services[name] for name in names if running[name]}, timeout=2.0)
        states = []
        for name in names:
            entry, found = bundle.services[name], running[name]
            states.append(ServiceState(
                name=name, state=RUNNING if healthy.get(name) else UNHEALTHY if found else STOPPED,
                host=entry["host"], port=entry["port"], pid=found[0].pid if found else entry["pid"], url=entry.get("url"),
                uptime=process_age(found[0].start) if found else None,
            ))
        return states

    def logs(self, bundle) -> dict[str, str]:
        return {"postgres": str(self.pg_layout.log_file), "atlas": str(self.atlas_layout.log_file)}

    def to_restart(self, states: list[ServiceState]) -> list[str]:
        """Only what is down, or broken while what it needs runs: Atlas that does not answer
        because PostgreSQL is down is left alone (it answers again once PostgreSQL is back), and
        a healthy PostgreSQL is never restarted because Atlas died (a sweep would lose it)."""
        running = {state.name for state in states if state.state == RUNNING}
        needs = {"atlas": {"postgres"}}
        return [state.name for state in states
                if state.state == STOPPED or (state.state != RUNNING and needs.get(state.name, set()) <= running)]

    def _running(self, name: str, entry: Mapping[str, Any]) -> list[Any]:
        """The live processes of service ``name``: the one its bundle entry names, and the one the
        services dir's own record names (Atlas's pid file, PostgreSQL's postmaster.pid), each only
        if it is the very process started (start time and command line), never a pid's new owner."""
        if name == "postgres":
            candidates = [postgres.RunningPostgres(pid=entry["pid"], start=entry.get("pid_start") or 0.0, port=entry["port"],
                                                   data_dir=entry.get("data_dir", str(self.pg_layout.data_dir))),
                          postgres.find_running(self.pg_layout)]
            alive = [c for c in candidates if c is not None and postgres.alive(c)]
        else:
            candidates = [atlas.AtlasProcess(pid=entry["pid"], start=entry.get("pid_start") or 0.0, host=entry["host"],
                                             port=entry["port"]), atlas.find_running(self.atlas_layout)]
            alive = [c for c in candidates if c is not None and c.alive()]
        return list({process.pid: process for process in alive}.values())

    def stop_service(self, name: str, entry: Mapping[str, Any]) -> bool:
        found = self._running(name, entry)
        if name == "postgres":
            stopped = [postgres.stop(process, kill_after=KILL_AFTER) for process in found]
            postgres.remove_socket_dir(self.pg_layout)
        else:
            stopped = [process.stop(kill_after=KILL_AFTER) for process in found]
            if atlas.find_running(self.atlas_layout) is None:
                atlas.forget(self.atlas_layout)  # only once what it names is gone: never lose track of a live Atlas
        return any(stopped)

    def orphans(self) -> list[Orphan]:
        found = []
        process = atlas.find_running(self.atlas_layout)
        if process:
            found.append(Orphan(name="atlas", description=f"Atlas (pid {process.pid}) at {process.url}"))
        running = postgres.find_running(self.pg_layout)
        if running:
            found.append(Orphan(name="postgres", description=f"PostgreSQL (pid {running.pid}) on {self.pg_layout.data_dir}"))
        return found

    def stop_orphans(self) -> list[str]:
        stopped = []
        process = atlas.find_running(self.atlas_layout)
        if process and process.stop(kill_after=KILL_AFTER):
            stopped.append(f"Atlas (pid {process.pid})")
        atlas.forget(self.atlas_layout)
        running = postgres.find_running(self.pg_layout)
        if running and postgres.stop(running, kill_after=KILL_AFTER):
            stopped.append(f"PostgreSQL (pid {running.pid})")
            postgres.remove_socket_dir(self.pg_layout)
        return stopped

    def _check_port(self, host: str, port: int, key: str) -> None:
        if not port_is_free(host, port):
            raise UsageError(f"port {port} on {host} is already in use; change {key} in {self.resolved.config_path}")


def _last_line(path) -> str:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _mask_verifiers(sql: str) -> str:
    import re

    return re.sub(r"'SCRAM-SHA-256\$[^']*'", "'***'", sql)
