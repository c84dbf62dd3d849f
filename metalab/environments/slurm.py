"""The ``slurm`` environment: PostgreSQL and Atlas in one batch job on a services node.

sbatch, squeue and scancel run on the login node: here when ``gateway`` names this host (or
is absent), otherwise over SSH (``metalab.remote``). The job (``metalab.services.node``)
reports readiness with ``ready-{job id}.json`` under ``{file_root}/services/``; files from
older jobs never count, because the name carries the job id.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from ..errors import ConfigError, MetalabError
from ..secret import Secret
from ..services import DEFAULT_ATLAS_PORT, DEFAULT_AUTH_METHOD, DEFAULT_DATABASE, DEFAULT_USER
from ..services.node import NODE_SETTINGS
from ..services.postgres import PGPASS_NAME, pgpass_text
from . import slurm_job
from .base import RUNNING, STOPPED, UNHEALTHY, Orphan, Provisioned, ServiceEnvironment, ServiceState, start_order

__all__ = ["SlurmEnvironment"]

QUEUE_TIMEOUT = 3600.0  # waiting for an allocation: generous by default (`up --wait` changes it)
STARTUP_TIMEOUT = 300.0  # from RUNNING to both services answering
CALL_TIMEOUT = 60.0  # every sbatch/squeue/scancel
PASSWORD_FILE = "postgres.password"
TOKEN_FILE = "atlas.token"
SCRIPT_FILE = "services.sbatch"
DEFAULT_PYTHON = "python3"


class SlurmError(MetalabError):
    """The services job could not be submitted, started or stopped."""


class SlurmEnvironment(ServiceEnvironment):
    """Services as one SLURM job; every cluster call goes through one runner."""

    queue_timeout = QUEUE_TIMEOUT

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        profile = self.resolved.profile
        if profile.file_root is None:
            raise ConfigError(
                f"{self.resolved.config_path}: [environments.{self.resolved.name}] needs file_root "
                "(a directory the login node and the compute nodes share)"
            )
        self._runner: Any = None
        self._ready: dict[str, Any] | None = None
        self._secrets: dict[str, Secret | None] = {}

    # -- where commands run -------------------------------------------------------------

    @property
    def remote(self) -> bool:
        """True from a workstation: the cluster (and file_root) is reached through the gateway;
        the bundle is then this machine's own copy, and another goes to the cluster."""
        return self.resolved.behind_gateway

    def publish(self, bundle: Any) -> None:
        if self.remote:
            cluster_copy = cluster_view(bundle, self._path(PASSWORD_FILE))
            self.runner.write_text(self._path("bundle.json"), cluster_copy.to_json(), mode=0o600)

    def unpublish(self) -> None:
        if self.remote:
            self.runner.run(["rm", "-f", self._path("bundle.json")], timeout=CALL_TIMEOUT)

    @property
    def runner(self) -> Any:
        if self._runner is None:
            from ..remote import runner_for

            profile = self.resolved.profile
            self._runner = runner_for(profile.gateway, user=profile.user, ssh_key=profile.ssh_key)
        return self._runner

    @property
    def remote_services_dir(self) -> str:
        return str(PurePosixPath(str(self.resolved.file_root)) / "services")

    def _path(self, name: str) -> str:
        return str(PurePosixPath(self.remote_services_dir) / name)

    def _call(self, argv: list[str], what: str) -> str:
        done = self.runner.run(argv, timeout=CALL_TIMEOUT)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise SlurmError(f"{what} failed on {self.runner.where}: {detail[-1] if detail else f'exit {done.returncode}'}")
        return done.stdout

    @property
    def job_name(self) -> str:
        return slurm_job.job_name(self.resolved.project_name, self.resolved.name)

    # -- provisioning ---------------------------------------------------------------------

    def provision_postgres(self) -> Provisioned:
        ready = self._ensure_job()
        entry = {"host": ready["host"], "port": ready["postgres_port"], "job_id": ready["job_id"],
                 "node": ready["node"], "database": self._pg("database", DEFAULT_DATABASE),
                 "user": self._pg("user", DEFAULT_USER), "password_file": self._local_password_file()}
        return Provisioned(name="postgres", entry=entry, started=bool(self._started))

    def _local_password_file(self) -> str:
        """Where this machine reads the password: file_root's copy on the login node; from a
        workstation, a 0600 copy beside the local bundle (never printed)."""
        if not self.remote or self.dry:
            return self._path(PASSWORD_FILE)
        from ..services.postgres import PostgresLayout, sync_password_file

        layout = PostgresLayout(services_dir=self.bundle_path.parent)
        password = self._secret(PASSWORD_FILE)
        if password is not None:
            layout.password_file.parent.mkdir(parents=True, exist_ok=True)
            sync_password_file(layout, password)
        return str(layout.password_file)

    def provision_atlas(self) -> Provisioned:
        ready = self._ensure_job()
        if "atlas_port" not in ready:
            raise SlurmError("the services job runs no Atlas; declare [services.atlas] and run down, then up")
        token = self._secret(TOKEN_FILE)
        url = f"http://{ready['host']}:{ready['atlas_port']}"
        entry = {"host": ready["host"], "port": ready["atlas_port"], "job_id": ready["job_id"], "url": url,
                 "token": token.reveal() if token else None}
        return Provisioned(name="atlas", entry=entry, started=False)

    def _secret(self, name: str) -> Secret | None:
        """A secret this `up` wrote for the job (kept), else the one an adopted job reads (fetched once)."""
        if name not in self._secrets:
            self._secrets[name] = self._read_secret(name)
        return self._secrets[name]

    def _pg(self, key: str, default: str) -> str:
        config = self.resolved.services.postgres
        return getattr(config, key, None) or default

    def _ensure_job(self) -> dict[str, Any]:
        if self._ready is not None:
            return self._ready
        if self.dry:
            self._ready = self._dry_run()
            return self._ready
        adopted = self._adopt_running_job()
        if adopted is not None:
            self._ready = adopted
            return adopted
        job_id = self._submit()
        self.remember(Provisioned(name="job", entry={"job_id": job_id}, started=True))
        self._ready = self._wait_until_ready(job_id)
        return self._ready

    def _prepare_files(self) -> str:
        """Secrets and settings in 0600 files on the cluster, the job script among them (one
        write); returns the script's path."""
        password = self.resolved.services.postgres.password or self._read_secret(PASSWORD_FILE)
        if password is None:
            password = Secret(secrets.token_urlsafe(24))
        files = {PASSWORD_FILE: password.reveal() + "\n", PGPASS_NAME: pgpass_text(password)}
        self._secrets[PASSWORD_FILE] = password
        atlas = self.resolved.services.atlas
        settings: dict[str, Any] = {
            "database": self._pg("database", DEFAULT_DATABASE), "user": self._pg("user", DEFAULT_USER),
            "auth_method": self._pg("auth_method", DEFAULT_AUTH_METHOD),
            "bin_dir": self.resolved.services.postgres.bin_dir, "run_as": self.resolved.services.postgres.run_as,
            "postgres_port": self.resolved.services.postgres.port, "password_file": PASSWORD_FILE,
            "file_root": str(self.resolved.file_root), "atlas": None,
        }
        if atlas is not None:
            token = Secret(secrets.token_urlsafe(32))
            files[TOKEN_FILE] = token.reveal() + "\n"
            self._secrets[TOKEN_FILE] = token
            # The configured port on the node too (the job falls back to a free one when it is taken
            # there); the tunnel forwards the configured port on the workstation to whichever it got.
            settings["atlas"] = {"port": atlas.port or DEFAULT_ATLAS_PORT, "token_file": TOKEN_FILE}
        files[NODE_SETTINGS] = json.dumps(settings, indent=2)
        files[SCRIPT_FILE] = self.script()
        self.runner.write_files(self.remote_services_dir, files)
        return self._path(SCRIPT_FILE)

    def script(self) -> str:
        profile = self.resolved.profile
        return slurm_job.render_services_script(
            project=self.resolved.project_name, environment=self.resolved.name,
            services_dir=self.remote_services_dir, python=profile.python or DEFAULT_PYTHON,
            resources=profile.services,
        )

    def _submit(self) -> str:
        path = self._prepare_files()
        out = self._call(["sbatch", "--parsable", path], "sbatch")
        job_id = out.strip().split(";")[0]
        self.progress.line("slurm", f"submitted job {job_id} ({self.job_name}) on {self.runner.where}")
        return job_id

    def _wait_until_ready(self, job_id: str) -> dict[str, Any]:
        began = time.monotonic()
        queue_deadline = began + self.queue_timeout
        start_deadline: float | None = None
        last = None
        relayed = 0
        while True:
            jobs = slurm_job.parse_squeue(self._call(slurm_job.squeue_command(job_ids=[job_id]), "squeue"))
            job = jobs[0] if jobs else None
            shown = (job.state, job.reason) if job else ("GONE", "")
            if shown != last:
                where = f" on {job.node}" if job and job.node and job.state == "RUNNING" else ""
                reason = f" ({job.reason})" if job and job.reason not in ("", "None") else ""
                self.progress.line("slurm", f"job {job_id} {shown[0]}{reason}{where}", time.monotonic() - began)
                last = shown
            if job is None or job.state in slurm_job.TERMINAL_STATES:
                raise SlurmError(f"services job {job_id} ended ({shown[0]}) before it was ready: {self._log_tail(job_id)}")
            if job.state == "RUNNING":
                start_deadline = start_deadline or time.monotonic() + STARTUP_TIMEOUT
                relayed = self._relay_progress(job_id, relayed, began)
                text = self.runner.read_text(self._path(f"ready-{job_id}.json"))
                if text:
                    self._relay_progress(job_id, relayed, began)
                    return json.loads(text)
                if time.monotonic() > start_deadline:
                    raise SlurmError(f"services job {job_id} did not become ready within {STARTUP_TIMEOUT:.0f} s: "
                                     f"{self._log_tail(job_id)}")
            elif time.monotonic() > queue_deadline:
                raise SlurmError(f"services job {job_id} still {job.state} after {self.queue_timeout:.0f} s in the queue; "
                                 "raise `services up --wait`")
            time.sleep(0.25)

    def _relay_progress(self, job_id: str, shown: int, began: float) -> int:
        """Show each service as the job reports it up (its log's progress lines); returns how many were shown."""
        from ..services.node import PROGRESS_PREFIX

        text = self.runner.read_text(self._path(f"slurm-{job_id}.log")) or ""
        lines = [line[len(PROGRESS_PREFIX):] for line in text.splitlines() if line.startswith(PROGRESS_PREFIX)]
        for line in lines[shown:]:
            self.progress.line("slurm", line, time.monotonic() - began)
        return max(shown, len(lines))

    def _log_tail(self, job_id: str) -> str:
        text = self.runner.read_text(self._path(f"slurm-{job_id}.log")) or ""
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else f"no log at {self._path(f'slurm-{job_id}.log')}"

    def _read_secret(self, name: str) -> Secret | None:
        text = self.runner.read_text(self._path(name))
        return Secret(text.strip()) if text and text.strip() else None

    def _adopt_running_job(self) -> dict[str, Any] | None:
        for job in self._own_jobs():
            text = self.runner.read_text(self._path(f"ready-{job.job_id}.json")) if job.state == "RUNNING" else None
            if text:
                self.progress.line("slurm", f"adopted running services job {job.job_id} on {job.node} (no bundle recorded it)")
                return json.loads(text)
            self.progress.warn("slurm", f"cancelling services job {job.job_id} ({job.state}) left without a bundle")
            self._cancel(job.job_id)
        return None

    def _dry_run(self) -> dict[str, Any]:
        self.progress.line("slurm", f"would write {self._path(NODE_SETTINGS)}, {self._path(PASSWORD_FILE)} (0600)"
                           + (f", {self._path(TOKEN_FILE)} (0600)" if self.resolved.services.atlas else ""))
        self.progress.line("slurm", f"would write {self._path(SCRIPT_FILE)}:\n{self.script()}")
        self.progress.line("slurm", f"would run on {self._where_dry()}: sbatch --parsable {self._path(SCRIPT_FILE)}")
        # Placeholders for the printed bundle: the node and its ports are known only once the job runs.
        return {"job_id": "(job id)", "node": "(node)", "host": "(node address)",
                "postgres_port": self.resolved.services.postgres.port or 5432, "atlas_port": DEFAULT_ATLAS_PORT}

    def _where_dry(self) -> str:
        gateway = self.resolved.profile.gateway
        return gateway if gateway else "this machine"

    # -- the bundle -------------------------------------------------------------------------

    def store_locator(self, services: Mapping[str, Mapping[str, Any]]) -> str | None:
        """From a workstation the database is reached through the tunnel's local forward."""
        pg = services.get("postgres")
        if pg is None or not self.remote:
            return super().store_locator(services)
        plan = self.tunnel_plan(services) or {"forwards": []}
        local = next((f["local_port"] for f in plan["forwards"] if f["service"] == "postgres"), pg["port"])
        return super().store_locator({**services, "postgres": {**pg, "host": "127.0.0.1", "port": local}})

    def tunnel_plan(self, services: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
        """Forwards through the gateway; on the login node itself the node is reachable as is."""
        profile = self.resolved.profile
        if not profile.gateway:
            return None
        forwards = [
            {"service": name, "local_port": entry["port"], "remote_host": entry["host"], "remote_port": entry["port"]}
            for name, entry in ((n, services[n]) for n in start_order(services))
        ]
        if "atlas" in services and self.resolved.services.atlas is not None:
            forwards[-1]["local_port"] = self.resolved.services.atlas.port or DEFAULT_ATLAS_PORT
        # python: the cluster's interpreter, for a workstation that reads the runs' files through the gateway
        return {"gateway": profile.gateway, "user": profile.user, "python": profile.python or DEFAULT_PYTHON,
                "ssh_key": str(profile.ssh_key) if profile.ssh_key else None, "forwards": forwards}

    # -- checking and stopping ----------------------------------------------------------------

    def states(self, bundle: Any) -> list[ServiceState]:
        job_ids = sorted({str(entry["job_id"]) for entry in bundle.services.values()})
        jobs = {j.job_id: j for j in slurm_job.parse_squeue(self._call(slurm_job.squeue_command(job_ids=job_ids), "squeue"))}
        any_running = any(job.state == "RUNNING" for job in jobs.values())
        health = self._probe() if any_running else {}
        states = []
        for name in start_order(bundle.services):
            entry = bundle.services[name]
            job = jobs.get(str(entry["job_id"]))
            running = job is not None and job.state == "RUNNING"
            state = RUNNING if running and health.get(name) else UNHEALTHY if running else STOPPED
            detail = slurm_job.describe(job)
            states.append(ServiceState(name=name, state=state, host=entry["host"], port=entry["port"],
                                       job_id=str(entry["job_id"]), url=entry.get("url"), detail=detail))
        return states

    def _probe(self) -> dict[str, bool]:
        """Each service's health, checked from the login node (the node is reachable from there):
        here on the login node itself, else by the cluster's python over SSH, reading the
        cluster's copy of the bundle."""
        from ..services.probe import probe

        if not self.remote:
            from .. import bundle as bundles

            found = bundles.load(self.bundle_path)
            return probe(found.services) if found else {}
        python = self.resolved.profile.python or DEFAULT_PYTHON
        done = self.runner.run([python, "-m", "metalab.services.probe", self._path("bundle.json")], timeout=CALL_TIMEOUT)
        try:
            return json.loads(done.stdout) if done.returncode == 0 else {}
        except ValueError:
            return {}

    def logs(self, bundle) -> dict[str, str]:
        found = {"postgres": self._path("postgres.log"), "atlas": self._path("atlas.log")}
        job = next((entry.get("job_id") for entry in (bundle.services.values() if bundle else ())), None)
        if job:
            found["job"] = self._path(f"slurm-{job}.log")
        return found

    def read_log(self, path: str) -> str | None:
        return self.runner.read_text(path)  # on the cluster, through the gateway from a workstation

    def stop_service(self, name: str, entry: Mapping[str, Any]) -> bool:
        return self._cancel(str(entry["job_id"]))

    def _cancel(self, job_id: str) -> bool:
        jobs = slurm_job.parse_squeue(self._call(slurm_job.squeue_command(job_ids=[job_id]), "squeue"))
        if not jobs or jobs[0].state in slurm_job.TERMINAL_STATES:
            return False
        self._call(["scancel", job_id], f"scancel {job_id}")
        deadline = time.monotonic() + CALL_TIMEOUT
        while time.monotonic() < deadline:  # down waits until the job has left the queue
            jobs = slurm_job.parse_squeue(self._call(slurm_job.squeue_command(job_ids=[job_id]), "squeue"))
            if not jobs or jobs[0].state in slurm_job.TERMINAL_STATES:
                return True
            time.sleep(0.2)
        raise SlurmError(f"job {job_id} is still in the queue after scancel")

    def _own_jobs(self) -> list[slurm_job.JobState]:
        jobs = slurm_job.parse_squeue(self._call(slurm_job.squeue_command(name=self.job_name), "squeue"))
        return [job for job in jobs if job.state not in slurm_job.TERMINAL_STATES]

    def orphans(self) -> list[Orphan]:
        return [Orphan(name="job", description=f"services job {job.job_id} ({job.state} on {job.node or 'no node yet'})")
                for job in self._own_jobs()]

    def stop_orphans(self) -> list[str]:
        return [f"services job {job.job_id}" for job in self._own_jobs() if self._cancel(job.job_id)]


def cluster_view(bundle: Any, password_file: str) -> Any:
    """The bundle as the cluster sees it: the store at the node's own address, the cluster's password file."""
    import dataclasses

    from ..store.locator import locator_at

    pg = bundle.services.get("postgres")
    if pg is None or not bundle.store_locator:
        return bundle
    locator = locator_at(bundle.store_locator, pg["host"], pg["port"])
    services = {**bundle.services, "postgres": {**pg, "password_file": password_file}}
    return dataclasses.replace(bundle, store_locator=locator, services=services)
