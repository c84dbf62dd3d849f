from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import metalab
from metalab.errors import ConfigError
from metalab.executor.config import SlurmExecutorConfig, executor_from_config
from metalab.progress import RunProgress


@metalab.operation
def train(params, seeds, capture):
    rng = seeds.rng()
    capture.metric("score", rng.random() * params["scale"])


def quick_experiment(**kwargs):
    return metalab.Experiment(name="mvp", version="0.1", context={}, operation=train,
                              params=metalab.grid(scale=[0.1, 1.0, 10.0]), seeds=metalab.seeds(base=123, replicates=2),
                              **kwargs)


def test_quick_start_gives_six_results_in_the_default_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = metalab.run(quick_experiment()).result()
    assert len(results) == 6 and results.succeeded == 6 and results.failed == 0
    assert [r.params["scale"] for r in results] == [0.1, 0.1, 1.0, 1.0, 10.0, 10.0]
    assert [r.replicate for r in results] == [0, 1, 0, 1, 0, 1]
    assert all(r.seed == 123 and set(r.metrics) == {"score"} for r in results)
    # same replicate, same stream: scores scale exactly with the parameter
    assert results[4].metrics["score"] == pytest.approx(results[0].metrics["score"] * 100)
    folder = tmp_path / "experiments" / "mvp-0.1"
    assert json.loads((folder / "experiment.json").read_text())["runs"] == 6
    lines = [json.loads(line) for path in (folder / "runs").glob("*.jsonl") for line in path.read_text().splitlines()]
    assert sorted(line["run_id"] for line in lines) == sorted(r.run_id for r in results)


def test_resume_skips_finished_runs_and_says_how_many(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = metalab.run(quick_experiment(), progress=False)
    again = metalab.run(quick_experiment(), progress=True)  # stderr is no terminal here: progress forced on
    assert (first.skipped, first.ran) == (0, 6) and (again.skipped, again.ran) == (6, 0)
    assert len(list((tmp_path / "experiments" / "mvp-0.1" / "runs").glob("*.jsonl"))) == 1
    assert len(again.result()) == 6


def test_records_load_back_from_the_store_alone_even_after_a_move(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metalab.run(quick_experiment(), store="runs/", progress=False)
    shutil.move(tmp_path / "runs", tmp_path / "moved")
    by_object = metalab.load_results(tmp_path / "moved", quick_experiment())
    by_id = metalab.load_results(str(tmp_path / "moved"), "mvp-0.1")
    assert len(by_object) == len(by_id) == 6
    assert {r.run_id for r in by_object} == {r.run_id for r in by_id}


@metalab.operation
def sometimes_fails(params, seeds, capture):
    if params["x"] == 2:
        raise RuntimeError("x=2 is cursed")
    capture.metric("y", params["x"] * 2)


def test_a_failing_run_is_recorded_with_its_traceback_and_the_others_go_on(tmp_path):
    exp = metalab.Experiment(name="flaky", version="1", operation=sometimes_fails, params=metalab.grid(x=[1, 2, 3]))
    results = metalab.run(exp, store=tmp_path, progress=False).result()
    assert (results.succeeded, results.failed) == (2, 1)
    (failure,) = results.failures()
    assert failure.params == {"x": 2} and "RuntimeError: x=2 is cursed" in failure.error and failure.metrics == {}
    assert "Results(flaky-1: 3 runs, 2 succeeded, 1 failed)" == repr(results)
    # a rerun retries only the failure
    assert metalab.run(exp, store=tmp_path, progress=False).ran == 1


@metalab.operation
def captures_everything(params, seeds, capture):
    import numpy as np

    for step in range(3):
        capture.metric("loss", 1.0 / (step + 1), step=step)
    capture.metric("acc", np.float32(0.5))
    capture.data("config", {"layers": [1, 2]})
    capture.data("weights", np.arange(4.0))
    capture.artifact("notes.txt", b"hello")
    capture.artifact("copy.json", params["source"])
    capture.log("custom line", 42)
    logging.getLogger("user.module").warning("from standard logging")


def test_capture_keeps_metrics_steps_data_artifacts_and_logs(tmp_path):
    import numpy as np

    source = tmp_path / "src.json"
    source.write_text('{"a": 1}')
    exp = metalab.Experiment(name="cap", version="1", operation=captures_everything,
                             params=metalab.manual([{"source": str(source)}]))
    (record,) = metalab.run(exp, store=tmp_path / "store", progress=False).result()
    assert record.status == "success", record.error
    assert record.metrics == {"loss": pytest.approx(1 / 3), "acc": 0.5}
    assert record.steps == {"loss": [[0, 1.0], [1, 0.5], [2, pytest.approx(1 / 3)]]}
    assert record.data["config"] == {"layers": [1, 2]}
    folder = tmp_path / "store" / "cap-1"
    assert np.array_equal(np.load(folder / record.data["weights"]["npy"]), np.arange(4.0))
    names = {a["name"]: a for a in record.artifacts}
    assert (folder / names["notes.txt"]["path"]).read_bytes() == b"hello"
    assert not Path(names["copy.json"]["path"]).is_absolute()
    log = (folder / record.log).read_text()
    assert "custom line 42" in log and "WARNING user.module: from standard logging" in log


@metalab.operation
def interrupted_on_third(params, seeds, capture):
    if params["i"] == 2:
        raise KeyboardInterrupt
    capture.metric("i", params["i"])


def test_ctrl_c_keeps_every_finished_record(tmp_path):
    exp = metalab.Experiment(name="ctrlc", version="1", operation=interrupted_on_third, params=metalab.grid(i=[0, 1, 2, 3]))
    with pytest.raises(KeyboardInterrupt):
        metalab.run(exp, store=tmp_path, progress=False)
    assert sorted(r.params["i"] for r in metalab.load_results(tmp_path, exp)) == [0, 1]


def test_process_executor_runs_everything_once(tmp_path):
    exp = metalab.Experiment(name="par", version="1", operation=train, params=metalab.grid(scale=list(range(50))),
                             seeds=metalab.seeds(base=1, replicates=4))
    handle = metalab.run(exp, store=tmp_path, executor=metalab.ProcessExecutor(max_workers=2), progress=False)
    results = handle.result()
    assert len(results) == 200 and results.succeeded == 200
    serial = metalab.run(exp, store=tmp_path / "serial", progress=False).result()
    assert [r.metrics for r in results] == [r.metrics for r in serial]  # same seeds, same numbers
    writers = list((tmp_path / "par-1" / "runs").glob("*.jsonl"))
    assert 1 <= len(writers) <= 2  # one file per worker that ran (on a loaded machine one may take every run)


SCRIPT = """
import metalab

@metalab.operation
def square(params, seeds, capture):
    capture.metric("sq", params["x"] ** 2)

if __name__ == "__main__":
    exp = metalab.Experiment(name="script", version="1", operation=square, params=metalab.grid(x=list(range({n}))))
    results = metalab.run(exp, store="store", executor={executor}, progress=False).result()
    print(results.succeeded, sum(r.metrics["sq"] for r in results))
"""


def test_an_operation_defined_in_the_main_script_runs_in_worker_processes(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT.format(n=20, executor="metalab.ProcessExecutor(2)"))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["20", str(sum(x * x for x in range(20)))]


@pytest.mark.parametrize("executor", ["None", "metalab.ProcessExecutor(2)"])
def test_ctrl_c_from_the_terminal_keeps_finished_records(tmp_path, executor):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import time, metalab
        @metalab.operation
        def slow(params, seeds, capture):
            time.sleep(0.02)
            capture.metric("x", params["x"])
        exp = metalab.Experiment(name="slow", version="1", operation=slow, params=metalab.grid(x=list(range(150))))
        metalab.run(exp, store="store", executor={executor}, progress=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs_dir = tmp_path / "store" / "slow-1" / "runs"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(len(p.read_text().splitlines()) for p in runs_dir.glob("*.jsonl")) < 6:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    lines = [line for p in runs_dir.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert 6 <= len(lines) < 150
    assert all(json.loads(line)["status"] == "success" for line in lines)  # whole lines only
    # the rest runs on the next attempt, nothing twice
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0
    ids = [json.loads(line)["run_id"] for p in runs_dir.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 150


def test_ctrl_c_with_a_long_queue_of_runs_exits_at_once(tmp_path):
    """Runs still queued for the workers must not hold the exit (the queue's feeder thread)."""
    script = tmp_path / "long.py"
    script.write_text(textwrap.dedent("""
        import time, metalab
        @metalab.operation
        def slow(params, seeds, capture):
            time.sleep(0.01)
        exp = metalab.Experiment(name="long", version="1", operation=slow, params=metalab.grid(x=list(range(200_000))))
        metalab.run(exp, store="store", executor=metalab.ProcessExecutor(2), progress=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs_dir = tmp_path / "store" / "long-1" / "runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.stat().st_size for p in runs_dir.glob("*.jsonl")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("metalab.run() did not exit after Ctrl+C") from None
    assert proc.returncode != 0


def test_progress_line_counts_done_failed_remaining_and_rate():
    stream = io.StringIO()
    meter = RunProgress(4, enabled=True, stream=stream)
    meter.update(done=1)
    meter.update(done=1, failed=1)
    meter.close()
    (last,) = stream.getvalue().splitlines()  # no terminal: one plain line, at close()
    assert "runs: 2/4 (50%)" in last and "failed=1" in last and "run/s" in last
    quiet = io.StringIO()
    RunProgress(4, enabled=False, stream=quiet).update(done=1)
    assert quiet.getvalue() == ""


def test_run_logs_store_executor_and_counts_at_info(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="metalab"):
        metalab.run(quick_experiment(), store=tmp_path, progress=False)
    text = caplog.text
    assert f"store: FileStore at {tmp_path}" in text and "executor: in-process" in text
    assert "runs: 6 total, 0 already done, 6 to run" in text


def test_executor_from_config():
    assert executor_from_config("local", {"workers": 1}) is None
    assert executor_from_config("local", {}) is None
    assert executor_from_config("local", {"workers": 4}).max_workers == 4
    slurm = executor_from_config("slurm", {"partition": "gpu", "time": "2:00:00", "memory": "16G", "gpus": 1})
    assert isinstance(slurm, metalab.SlurmExecutor)
    c = slurm.config
    assert (c.partition, c.time, c.cpus, c.memory, c.gpus, c.max_concurrent, c.modules, c.conda_env, c.setup) == (
        "gpu", "2:00:00", 1, "16G", 1, None, [], None, [])
    assert SlurmExecutorConfig() == SlurmExecutorConfig(partition="default", time="1:00:00", cpus=1, memory="4G", gpus=0)
    from metalab.executor.slurm_array import sbatch_directives

    assert "--gres=gpu:1" in sbatch_directives(slurm.config)


def test_executor_config_errors_list_what_is_valid():
    with pytest.raises(ConfigError, match=r"unknown executor type 'slurmm'; did you mean 'slurm'\?.*types: local, slurm"):
        executor_from_config("slurmm", {})
    with pytest.raises(ConfigError, match=r"unknown slurm executor option 'gpu'; did you mean 'gpus'\?"):
        executor_from_config("slurm", {"gpu": 1})
    with pytest.raises(ConfigError, match="time"):
        executor_from_config("slurm", {"time": "soon"})
    with pytest.raises(ConfigError, match="workers"):
        executor_from_config("local", {"workers": 0})


def test_new_executor_types_can_be_registered():
    from metalab.executor.config import register_executor

    register_executor("fake", lambda options: ("fake", options))
    assert executor_from_config("fake", {"n": 1}) == ("fake", {"n": 1})


DOC_CONFIG = Path(__file__).parent.parent / "cli"


def test_resolve_executor_uses_the_profile_defaults_under_the_overrides(tmp_path, monkeypatch):
    shutil.copy(DOC_CONFIG / "doc_example.toml", tmp_path / ".metalab.toml")
    shutil.copy(DOC_CONFIG / "doc_example.local.toml", tmp_path / ".metalab.local.toml")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.delenv("METALAB_CONFIG", raising=False)
    executor = metalab.resolve_executor("slurm", {"gpus": 2, "time": "4:00:00"})
    c = executor.config
    assert isinstance(executor, metalab.SlurmExecutor)
    assert (c.partition, c.memory, c.modules, c.conda_env, c.max_concurrent) == ("gpu", "32G", ["cuda/12.0"], "ml-env", 200)
    assert (c.gpus, c.time) == (2, "4:00:00")  # overrides win
    assert (c.setup, c.mail_user, c.mail_type) == (["source ~/my_setup.sh"], "jsmith@university.edu", "end,fail")
    assert (c.gateway, c.user) == ("hpc.university.edu", "jsmith")
    assert metalab.resolve_executor("local", {"workers": 1}) is None
    with pytest.raises(ConfigError, match="no environment profile 'nope'"):
        metalab.resolve_executor("nope")


def test_resolve_executor_without_a_config_uses_the_overrides_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METALAB_CONFIG", raising=False)
    executor = metalab.resolve_executor("slurm", {"partition": "short"})
    assert executor.config.partition == "short" and executor.config.memory == "4G"


def test_results_table_and_dataframe(tmp_path):
    results = metalab.run(quick_experiment(), store=tmp_path, progress=False).result()
    table = results.table().splitlines()
    assert table[0].split() == ["run_id", "replicate", "status", "scale", "score"] and len(table) == 8
    frame = results.to_dataframe()
    assert list(frame.columns) == ["run_id", "replicate", "status", "scale", "score"] and len(frame) == 6
