"""The SLURM executor's pure parts: chunking, sbatch options, squeue parsing, the job script,
what a task runs, and what can be shipped to a cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import metalab
from metalab.errors import UsageError
from metalab.executor.config import SlurmExecutorConfig
from metalab.executor.slurm_array import (
    DEFAULT_MAX_ARRAY_SIZE,
    Chunk,
    SiteLimits,
    chunk_sbatch_args,
    fit_runs_per_task,
    parse_site_limits,
    parse_task_states,
    plan_chunks,
    render_array_script,
    summarize,
)
from metalab.executor.worker import task_runs
from metalab.store import FileStore, StoreConfig, shareable_locator
from metalab.store.locator import without_password


@given(tasks=st.integers(1, 50_000), size=st.integers(1, 5_000))
def test_chunks_cover_every_task_once_and_fit_the_site(tasks, size):
    chunks = plan_chunks(tasks, size)
    assert all(1 <= c.count <= size for c in chunks)  # indices 0..count-1 stay below MaxArraySize
    covered = [c.offset + i for c in chunks for i in range(c.count)]
    assert covered == list(range(tasks))


def test_chunks_of_200_tasks_under_max_array_size_64():
    assert plan_chunks(200, 64) == [Chunk(0, 64), Chunk(64, 64), Chunk(128, 64), Chunk(192, 8)]
    with pytest.raises(ValueError):
        plan_chunks(10, 0)


def test_sbatch_args_carry_the_cap_and_the_chain():
    first = chunk_sbatch_args(Chunk(0, 64), max_concurrent=4, after=None, name="metalab-e-1")
    assert first == ["--parsable", "--array=0-63%4", "--job-name=metalab-e-1"]
    second = chunk_sbatch_args(Chunk(64, 8), max_concurrent=4, after="123", name="metalab-e-1")
    assert second[1] == "--array=0-7%4" and second[-1] == "--dependency=afterany:123"
    # a cap at or above the chunk's size is no cap; no cap means no chain
    assert chunk_sbatch_args(Chunk(0, 3), max_concurrent=4, after=None, name="n")[1] == "--array=0-2"
    assert not any(a.startswith("--dependency") for a in chunk_sbatch_args(Chunk(0, 3), max_concurrent=None, after=None, name="n"))


def test_site_limits_from_scontrol_show_config():
    text = "Configuration data as of 2026-11-26T08:00:00\nMaxArraySize            = 64\nMaxJobCount             = 50000\n"
    assert parse_site_limits(text) == SiteLimits(64, 50000)
    assert parse_site_limits("MinJobAge = 300\n") == SiteLimits(DEFAULT_MAX_ARRAY_SIZE, 10000)
    assert parse_site_limits("MaxArraySize = 0\n").max_array_size == DEFAULT_MAX_ARRAY_SIZE


def test_runs_are_packed_only_when_tasks_would_crowd_the_job_records():
    limits = SiteLimits(1001, 10000)
    assert fit_runs_per_task(200, 1, limits) == 1 and fit_runs_per_task(2500, 1, limits) == 1
    assert fit_runs_per_task(10_000, 1, limits) == 4  # 2,500 tasks: a quarter of MaxJobCount
    assert fit_runs_per_task(10_000, 8, limits) == 8  # asking for more per task is always fine
    assert fit_runs_per_task(10, 1, SiteLimits(1001, 1)) == 10


def test_task_states_from_squeue():
    text = "155|8|COMPLETED|None|vm\n155|9|RUNNING|None|vm\n156|0|PENDING|JobArrayTaskLimit|\n157|N/A|PENDING|Dependency|\n"
    tasks = parse_task_states(text)
    assert [(t.job_id, t.task, t.state) for t in tasks] == [("155", 8, "COMPLETED"), ("155", 9, "RUNNING"), ("156", 0, "PENDING")]
    assert [t.live for t in tasks] == [False, True, True]
    assert summarize(tasks) == {"COMPLETED": 1, "RUNNING": 1, "PENDING": 1}


def test_the_job_script_has_the_resources_the_environment_and_no_secret():
    options = SlurmExecutorConfig(partition="gpu", time="2:00:00", cpus=4, memory="16G", gpus=1, modules=["cuda/12.0"],
                                  conda_env="ml env", setup=["source ~/my_setup.sh"], mail_user="j@u.edu",
                                  mail_type="end,fail", account="lab")
    text = render_array_script(options=options, experiment_id="mvp-0.1", submission_dir="/shared/e/mvp-0.1/slurm/s1",
                               python="/opt/venv/bin/python")
    lines = text.splitlines()
    for directive in ("--partition=gpu", "--time=2:00:00", "--cpus-per-task=4", "--mem=16G", "--gres=gpu:1",
                      "--mail-user=j@u.edu", "--mail-type=end,fail", "--account=lab",
                      "--output=/shared/e/mvp-0.1/slurm/s1/logs/%A_%a.log"):
        assert f"#SBATCH {directive}" in lines
    assert "module load cuda/12.0" in lines and "conda activate 'ml env'" in lines and "source ~/my_setup.sh" in lines
    assert lines[-1] == "exec /opt/venv/bin/python -m metalab.executor.worker /shared/e/mvp-0.1/slurm/s1 \"$@\""
    assert lines.index("module load cuda/12.0") < lines.index("conda activate 'ml env'") < lines.index("source ~/my_setup.sh")
    bare = render_array_script(options=SlurmExecutorConfig(), experiment_id="e", submission_dir="/s", python="python3")
    assert "module" not in bare and "conda" not in bare and "--gres" not in bare and "--mail" not in bare


def test_each_task_owns_consecutive_runs():
    spec = {"runs_per_task": 3, "runs": [[f"r{i}"] for i in range(8)]}
    assert [[r[0] for r in task_runs(spec, task)] for task in range(3)] == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6", "r7"]]


def test_a_locator_for_a_spec_file_holds_no_password():
    assert without_password("postgresql://me:s3cret@node:5432/metalab?file_root=/x&password=p2&sslmode=require") == \
        "postgresql://me@node:5432/metalab?file_root=/x&sslmode=require"
    assert without_password("postgresql://node/db?file_root=/x") == "postgresql://node/db?file_root=/x"


def test_stores_as_text_another_process_can_open(tmp_path):
    assert shareable_locator(None) is None and shareable_locator("discover") == "discover"
    assert shareable_locator(tmp_path) == str(tmp_path) and shareable_locator(FileStore(tmp_path)) == str(tmp_path)
    assert shareable_locator(StoreConfig("postgresql://u:pw@h/db?file_root=/r")) == "postgresql://u:pw@h/db?file_root=/r"
    pg = metalab.PostgresStore.from_locator(f"postgresql://u:pw@h:5/db?file_root={tmp_path}")
    assert shareable_locator(pg) == f"postgresql://u@h:5/db?file_root={tmp_path}"
    with pytest.raises(TypeError):
        shareable_locator(42)


@metalab.operation
def module_level(params, seeds, capture):
    capture.metric("x", 1)


def test_what_a_task_could_not_import_is_refused_before_submission(monkeypatch):
    assert module_level.import_spec() == {"module": __name__, "qualname": "module_level"}

    def outer():
        @metalab.operation
        def inner(params, seeds, capture):
            pass

        return inner

    with pytest.raises(UsageError, match="not defined at module level"):
        outer().import_spec()
    with pytest.raises(UsageError, match="not defined at module level"):
        metalab.operation(lambda p, s, c: None).import_spec()
    interactive = metalab.operation(lambda p, s, c: None)
    interactive.module, interactive.qualname = "__main__", "typed_in"
    monkeypatch.delattr(sys.modules["__main__"], "__file__", raising=False)
    with pytest.raises(UsageError, match="interactive session"):
        interactive.import_spec()


def test_an_operation_in_a_script_ships_its_source(tmp_path, monkeypatch):
    script = tmp_path / "sweep.py"
    script.write_text("# the user's script\n")
    main = type(sys)("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    op = metalab.operation(lambda p, s, c: None)
    op.module, op.qualname = "__main__", "train"
    assert op.import_spec() == {"module": None, "qualname": "train", "script_path": str(script.resolve()),
                                "script_source": "# the user's script\n"}


def test_from_a_workstation_the_store_must_be_one_the_cluster_can_reach():
    from metalab.executor.slurm import SlurmExecutor

    class Workstation:
        local, where = False, "me@hpc"

    for fine in ("discover", "/shared/experiments", "postgresql://u@node/db?file_root=/shared"):
        assert SlurmExecutor._store_for(Workstation(), fine) == fine
    for unreachable in (None, "experiments", "./runs"):
        with pytest.raises(UsageError, match="not a place the cluster can reach from me@hpc"):
            SlurmExecutor._store_for(Workstation(), unreachable)


def test_metalab_run_is_refused_while_a_task_imports_the_script(tmp_path):
    from metalab import api

    api.RUN_FORBIDDEN_REASON = "put the call under if __name__"
    try:
        with pytest.raises(UsageError, match="put the call under"):
            metalab.run(metalab.Experiment(name="e", version="1", operation=module_level, params=[{}]), store=tmp_path)
    finally:
        api.RUN_FORBIDDEN_REASON = None
    assert not (Path(tmp_path) / "e-1").exists()
