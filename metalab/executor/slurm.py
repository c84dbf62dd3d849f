"""SlurmExecutor: an experiment's runs as SLURM job arrays, and the handle that follows them.

``metalab.run(exp, executor=SlurmExecutor(...), store=...)`` returns at once with a
:class:`SlurmRun`; ``result()`` waits for the arrays and returns the results. The cluster side
(opening the store, writing the spec, queueing, reading records) is ``slurm_cluster``: called
in this process on the login node, or on the gateway over SSH from a workstation.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import MetalabError, NotFoundError, RemoteError, UsageError
from . import slurm_array
from .config import SlurmExecutorConfig

__all__ = ["SlurmExecutor", "SlurmRun", "TasksFailed"]

SUBMIT_TIMEOUT = 600.0  # writing a large spec and checking the import, over SSH
CALL_TIMEOUT = 120.0
FIRST_TICK = 0.5  # result() polls at 0.5 s, then 1.5x longer each time, up to MAX_TICK
MAX_TICK = 15.0
_ERROR_BASES = {UsageError.exit_code: UsageError, NotFoundError.exit_code: NotFoundError}


def gateway_error(error: Mapping[str, Any]) -> MetalabError:
    """The gateway's error as the same class here, so ``except ConfigError`` catches it on a
    workstation too; a class this metalab lacks (another version) becomes one of the same name
    and exit code."""
    import importlib

    module, kind = str(error.get("module", "")), str(error["kind"])
    if module == "metalab" or module.startswith("metalab."):
        try:
            cls = getattr(importlib.import_module(module), kind, None)
        except ImportError:
            cls = None
        if isinstance(cls, type) and issubclass(cls, MetalabError):
            made = cls.__new__(cls)
            Exception.__init__(made, error["message"])  # its own __init__ may want more than the message
            return made
    base = _ERROR_BASES.get(error["exit_code"], MetalabError)
    return type(kind, (base,), {"__module__": __name__})(error["message"])


class TasksFailed(MetalabError):
    """Array tasks ended without recording their runs; ``failures`` says which, ``results`` has the rest."""

    def __init__(self, message: str, *, failures: list[dict[str, Any]], results: Any) -> None:
        super().__init__(message)
        self.failures = failures
        self.results = results


class ClusterSide:
    """Where ``slurm_cluster`` runs: here (the login node), or on the gateway as a module."""

    def __init__(self, *, gateway: str | None, user: str | None, ssh_key: str | None, python: str | None) -> None:
        from ..remote import LocalRunner, is_this_host, runner_for

        self.local = is_this_host(gateway)
        self.python = python or (sys.executable if self.local else "python3")
        key = Path(ssh_key) if ssh_key else None
        self.runner = LocalRunner() if self.local else runner_for(gateway, user=user, ssh_key=key)
        self.where = self.runner.where

    @classmethod
    def of(cls, config: SlurmExecutorConfig) -> ClusterSide:
        return cls(gateway=config.gateway, user=config.user, ssh_key=config.ssh_key, python=config.python)

    def call(self, operation: str, request: Mapping[str, Any], *, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        from . import slurm_cluster

        if self.local:
            return slurm_cluster.OPERATIONS[operation](request, self.runner)
        argv = [self.python, "-m", "metalab.executor.slurm_cluster", operation]
        done = self.runner.run(argv, timeout=timeout, input=json.dumps(request))
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise RemoteError(f"metalab on {self.where} ({self.python}) failed: "
                              f"{detail[-1] if detail else f'exit {done.returncode}'}") from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            raise gateway_error(error)
        return answer


class SlurmExecutor:
    """Runs an experiment's runs as job arrays on a SLURM cluster (see ``SlurmExecutorConfig``)."""

    def __init__(self, config: SlurmExecutorConfig | None = None, **options: Any) -> None:
        self.config = config if config is not None else SlurmExecutorConfig(**options)

    def __repr__(self) -> str:
        return f"SlurmExecutor({self.config!r})"

    def describe(self) -> str:
        c = self.config
        where = f" via {c.gateway}" if c.gateway else ""
        cap = f", at most {c.max_concurrent} at once" if c.max_concurrent else ""
        return f"SLURM job arrays{where} (partition {c.partition}, {c.time}, {c.cpus} cpu, {c.memory}, {c.gpus} gpu{cap})"

    def submit(self, experiment: Any, *, store: Any, resume: bool = True, progress: bool | None = None) -> SlurmRun:
        """Queue the runs not yet finished in ``store`` (and held by no live task); returns at once."""
        from ..store import shareable_locator

        cluster = ClusterSide.of(self.config)
        request = {
            "experiment": experiment.describe(),
            "runs": [[s.run_id, s.params, s.replicate, s.index] for s in experiment.runs()],
            "seeds": experiment.seeds.describe(),
            "operation": experiment.operation.import_spec(),
            "sys_path": [os.getcwd(), *([str(Path(sys.argv[0]).resolve().parent)] if sys.argv and sys.argv[0] else [])],
            "store": self._store_for(cluster, shareable_locator(store)),
            "cwd": os.getcwd() if cluster.local else None,
            "file_root": self.config.file_root,
            "resume": resume,
            "options": {**self._options(), "python": cluster.python},
            "submission_id": time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
        }
        try:
            answer = cluster.call("submit", request, timeout=SUBMIT_TIMEOUT)
        except KeyboardInterrupt:
            if not cluster.local:  # the gateway may have queued chunks already; it stops at the next one
                job_name = slurm_array.array_job_name(experiment.experiment_id, request["submission_id"])
                cluster.call("cancel_by_name", {"job_name": job_name})
            raise
        handle = SlurmRun(experiment, cluster, answer, progress=progress, store=_store_request(request))
        handle.announce()
        return handle

    def reconnect(self, experiment: Any, *, store: Any, progress: bool | None = None) -> SlurmRun:
        """The handle of ``experiment``'s arrays in ``store``, from any process, submitting nothing."""
        from ..store import shareable_locator

        cluster = ClusterSide.of(self.config)
        experiment_id = experiment if isinstance(experiment, str) else experiment.experiment_id
        request = {"experiment_id": experiment_id, "store": self._store_for(cluster, shareable_locator(store)),
                   "cwd": os.getcwd() if cluster.local else None, "file_root": self.config.file_root}
        answer = cluster.call("attach", request)
        return SlurmRun(experiment, cluster, {"experiment_dir": answer["experiment_dir"], "submission": None, **answer},
                        progress=progress, store=_store_request(request))

    def _options(self) -> dict[str, Any]:
        from dataclasses import asdict

        skip = {"gateway", "user", "ssh_key", "file_root", "python"}
        return {key: value for key, value in asdict(self.config).items() if key not in skip}

    @staticmethod
    def _store_for(cluster: ClusterSide, locator: str | None) -> str | None:
        """From a workstation only what the cluster can find on its own: a relative path or the
        default ./experiments would land in the gateway user's home."""
        if cluster.local or locator == "discover" or (locator and (locator.startswith(("postgresql://", "postgres://"))
                                                                   or os.path.isabs(locator))):
            return locator
        raise UsageError(
            f"store={locator!r} is not a place the cluster can reach from {cluster.where}; use store='discover' "
            "(with `metalab services up --env <profile>`), a postgresql:// locator or an absolute path on the cluster"
        )


def _store_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a submit or attach request that opens the store on the cluster side."""
    return {key: request.get(key) for key in ("store", "cwd", "file_root")}


class SlurmRun:
    """What ``metalab.run()`` returns for SLURM: ``status``, ``result()``, ``cancel()``."""

    def __init__(
        self, experiment: Any, cluster: ClusterSide, answer: Mapping[str, Any], *, progress: bool | None,
        store: Mapping[str, Any],
    ) -> None:
        """``store``: how the cluster side opens the store again (``_store_request``)."""
        self.experiment = experiment
        self._store = dict(store)
        self.experiment_id = experiment if isinstance(experiment, str) else experiment.experiment_id
        self._cluster = cluster
        self.experiment_dir = answer["experiment_dir"]
        self.submission = answer.get("submission")
        self.skipped = answer.get("finished", 0)
        self.in_flight = answer.get("in_flight", 0)
        self.ran = answer.get("submitted", 0)  # runs this call queued
        self._progress = progress
        self._last: dict[str, Any] = dict(answer)

    def __repr__(self) -> str:
        return f"SlurmRun({self.experiment_id}, jobs {', '.join(self.job_ids) or 'none'})"

    @property
    def job_ids(self) -> list[str]:
        """The array jobs this call queued (``poll()`` reports every submission's)."""
        return [chunk[0] for chunk in self.submission["chunks"]] if self.submission else []

    def announce(self) -> None:
        import logging

        log = logging.getLogger("metalab")
        log.info("store: %s", self._last.get("store"))
        log.info("runs: %d total, %d already done, %d in flight, %d submitted", self._last.get("total", 0),
                 self.skipped, self.in_flight, self.ran)
        if self.submission:
            chunks = self.submission["chunks"]
            log.info("queued %d array job(s) on %s: %s, %d run(s) per task (MaxArraySize %d, MaxJobCount %d)",
                     len(chunks), self._cluster.where, ", ".join(f"{job}[{count}]" for job, _, count in chunks),
                     self.submission["runs_per_task"], self.submission["max_array_size"],
                     self.submission["max_job_count"])

    def poll(self) -> dict[str, Any]:
        """One look, without blocking: task counts by state, runs submitted and recorded."""
        self._last = self._cluster.call("poll", {"experiment_dir": self.experiment_dir})
        return self._last

    @property
    def status(self) -> str:
        """``queued``, ``running``, ``done``, or ``incomplete`` (tasks ended with runs unrecorded)."""
        report = self.poll()
        if report["live_tasks"]:
            return "running" if report["running_tasks"] else "queued"
        return "done" if report["recorded"] >= report["submitted"] else "incomplete"

    def result(self, timeout: float | None = None) -> Any:
        """Wait for every task (polling with backoff: one squeue per tick), then the results.

        Raises TasksFailed when tasks ended without recording their runs (cancelled, out of
        time or memory): it names their run ids and logs; ``metalab.run()`` again submits only those.
        """
        from ..progress import RunProgress

        deadline = None if timeout is None else time.monotonic() + timeout
        report = self.poll()
        # what was recorded before this wait counts, but not in the rate
        meter = RunProgress(report["submitted"], enabled=self._progress, done=report["recorded"], failed=report["failed_runs"])
        tick = FIRST_TICK
        try:
            while report["live_tasks"]:
                if deadline is not None and time.monotonic() + tick > deadline:
                    raise TimeoutError(f"{self.experiment_id}: {report['live_tasks']} array tasks still queued or running")
                time.sleep(tick)
                tick = min(MAX_TICK, tick * 1.5)
                report = self.poll()
                meter.update(done=report["recorded"] - meter.done, failed=report["failed_runs"] - meter.failed)
        finally:
            meter.close()
        return self.collect()

    def collect(self) -> Any:
        """The results recorded so far, without waiting; TasksFailed if tasks ended without recording runs."""
        from ..results import Results
        from ..store.records import RunRecord

        answer = self._cluster.call("collect", {"experiment_dir": self.experiment_dir, **self._store})
        records = {data["run_id"]: RunRecord.from_dict(data) for data in answer["records"]}
        if isinstance(self.experiment, str):
            results = Results(self.experiment_id, sorted(records.values(), key=lambda r: (r.started_at, r.run_id)))
        else:
            results = Results(self.experiment_id, [records[s.run_id] for s in self.experiment.runs() if s.run_id in records])
        failures = answer["failures"]
        if failures:
            lost = sum(len(f["runs"]) for f in failures)
            shown = "; ".join(f"task {f['task']} ({f['state']}): runs {', '.join(f['runs'][:5])}"
                              f"{' ...' if len(f['runs']) > 5 else ''}, log {f['log']}" for f in failures[:5])
            more = f"; and {len(failures) - 5} more tasks" if len(failures) > 5 else ""
            raise TasksFailed(f"{self.experiment_id}: {len(failures)} array task(s) ended without recording {lost} run(s): "
                              f"{shown}{more}. metalab.run() again submits only the missing runs",
                              failures=failures, results=results)
        return results

    def cancel(self) -> list[str]:
        """scancel the experiment's live array jobs; returns their ids once SLURM has let them go."""
        return self._cluster.call("cancel", {"experiment_dir": self.experiment_dir})["cancelled"]
