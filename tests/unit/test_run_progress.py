"""Runs in progress: provisional lines, how records rank, who reads them, and a run's standard
logging (its INFO records in the run's log, nothing else changed). Real runs into a FileStore."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

import metalab
from metalab import runner
from metalab.store.files import FileStore, RecordWriter
from metalab.store.index_rows import LineBatch
from metalab.store.records import (
    FAILED,
    INTERRUPTED,
    RUNNING,
    SUCCESS,
    RunRecord,
    pick_latest,
    status_rank,
)


def record(status: str, started: float, run_id: str = "r1", **extra) -> RunRecord:
    return RunRecord(run_id=run_id, params={"x": 1}, seed=0, replicate=0, status=status, started_at=started, **extra)


def lines(store: FileStore, experiment_id: str) -> list[dict]:
    runs_dir = store.files(experiment_id).runs_dir
    return [json.loads(line) for path in sorted(runs_dir.glob("*.jsonl")) for line in path.read_text().splitlines()]


# -- ranking ---------------------------------------------------------------------------------------


def test_success_beats_failed_beats_running_and_a_running_record_never_beats_a_finished_one() -> None:
    assert status_rank(SUCCESS) > status_rank(FAILED) > status_rank(RUNNING) == status_rank(INTERRUPTED)
    assert status_rank("something else") == status_rank(FAILED)  # an unknown status counts as finished
    # a later start does not help a running record against a finished one
    assert pick_latest([record(FAILED, 1.0), record(RUNNING, 9.0)])["r1"].status == FAILED
    assert pick_latest([record(RUNNING, 9.0), record(SUCCESS, 1.0)])["r1"].status == SUCCESS
    # among running lines of one run (same start), the latest line wins: the heartbeat grows
    beats = [record(RUNNING, 5.0, heartbeat=6.0, steps={"loss": [[0, 1.0]]}),
             record(RUNNING, 5.0, heartbeat=8.0, steps={"loss": [[0, 1.0], [1, 0.5]]})]
    assert pick_latest(beats)["r1"].heartbeat == 8.0
    assert pick_latest([*beats, record(INTERRUPTED, 5.0, heartbeat=9.0)])["r1"].status == INTERRUPTED
    # an interrupted run that runs again: the new attempt (a later start) is the run's record
    assert pick_latest([record(INTERRUPTED, 5.0), record(RUNNING, 7.0)])["r1"].status == RUNNING


def test_the_index_batch_ranks_lines_as_pick_latest_does() -> None:
    def winner(*records: RunRecord) -> str:
        batch = LineBatch()
        for r in records:
            batch.add(r.to_json() + "\n")
        (line,) = batch.copy_lines({})
        return json.loads(line.split("\t", 2)[2])["status"]

    assert winner(record(FAILED, 1.0), record(RUNNING, 9.0)) == FAILED
    assert winner(record(RUNNING, 9.0), record(FAILED, 1.0)) == FAILED
    assert winner(record(RUNNING, 1.0), record(SUCCESS, 1.0), record(RUNNING, 1.0)) == SUCCESS
    assert winner(record(RUNNING, 1.0, heartbeat=2.0), record(INTERRUPTED, 1.0, heartbeat=3.0)) == INTERRUPTED


def test_readers_of_finished_runs_leave_running_lines_out(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with RecordWriter(store.files("e-1"), "w") as sink:
        sink.write(record(RUNNING, 1.0, run_id="a", heartbeat=2.0))  # still going (or killed)
        sink.write(record(RUNNING, 1.0, run_id="b", heartbeat=2.0))
        sink.write(record(SUCCESS, 1.0, run_id="b"))  # ended well
        sink.write(record(INTERRUPTED, 3.0, run_id="c", heartbeat=4.0))  # Ctrl+C
        sink.write(record(FAILED, 1.0, run_id="d"))
        sink.write(record(RUNNING, 5.0, run_id="d", heartbeat=6.0))  # the failed run, running again
    assert set(store.load("e-1")) == {"b", "d"} and store.load("e-1")["d"].status == FAILED
    assert store.run_statuses("e-1") == {"b": SUCCESS, "d": FAILED}
    assert store.finished_run_ids("e-1") == {"b"}
    assert RunRecord.from_dict(json.loads(record(RUNNING, 1.0, heartbeat=2.5).to_json())).heartbeat == 2.5
    assert "heartbeat" not in json.loads(record(SUCCESS, 1.0).to_json())


def test_a_line_a_failed_write_left_torn_is_ended_before_the_next(tmp_path: Path) -> None:
    files = FileStore(tmp_path).files("e-1")
    files.runs_dir.mkdir(parents=True)
    (files.runs_dir / "w.jsonl").write_text(record(SUCCESS, 1.0, run_id="a").to_json() + '\n{"run_id":"b","sta')
    with RecordWriter(files, "w") as sink:
        sink.write(record(SUCCESS, 2.0, run_id="c"))
    assert set(FileStore(tmp_path).load("e-1")) == {"a", "c"}  # the torn line stays unreadable, c is whole


# -- provisional lines from a real run ---------------------------------------------------------------


@pytest.fixture
def quick_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "START_AFTER", 0.2)
    monkeypatch.setattr(runner, "PROGRESS_EVERY", 0.2)


@metalab.operation
def stepping(params, seeds, capture):
    for step in range(params["steps"]):
        capture.metric("loss", 1.0 / (step + 1), step=step)
        time.sleep(params["pause"])


def test_a_run_that_lasts_writes_running_lines_with_its_steps_so_far_then_its_final_line(tmp_path, quick_progress):
    exp = metalab.Experiment(name="prog", version="1", operation=stepping,
                             params=metalab.manual([{"steps": 8, "pause": 0.15}, {"steps": 3, "pause": 0.0}]))
    results = metalab.run(exp, store=tmp_path, progress=False).result()
    assert [r.status for r in results] == [SUCCESS, SUCCESS]
    slow, quick = (spec.run_id for spec in exp.runs())
    slow_lines = [line for line in lines(FileStore(tmp_path), exp.experiment_id) if line["run_id"] == slow]
    running = [line for line in slow_lines if line["status"] == RUNNING]
    assert len(running) >= 2 and slow_lines[-1]["status"] == SUCCESS and "heartbeat" not in slow_lines[-1]
    counts = [len(line["steps"]["loss"]) for line in running]
    assert counts == sorted(counts) and counts[0] < counts[-1] <= 8  # the steps so far, growing
    beats = [line["heartbeat"] for line in running]
    assert beats == sorted(beats) and all(line["started_at"] == slow_lines[-1]["started_at"] for line in running)
    assert all(abs(line["heartbeat"] - line["started_at"] - line["duration"]) < 1e-3 for line in running)
    # a run shorter than START_AFTER writes its final line only
    assert [line["status"] for line in lines(FileStore(tmp_path), exp.experiment_id) if line["run_id"] == quick] == [SUCCESS]
    # resuming skips both; the results hold each once
    again = metalab.run(exp, store=tmp_path, progress=False)
    assert (again.skipped, again.ran) == (2, 0) and len(again.result()) == 2


def test_a_quiet_run_still_beats_and_an_interrupted_one_says_so(tmp_path, quick_progress, monkeypatch):
    monkeypatch.setattr(runner, "HEARTBEAT_EVERY", 0.3)
    release = threading.Event()

    @metalab.operation
    def quiet_then_ctrl_c(params, seeds, capture):
        capture.metric("started", 1)
        release.wait(1.5)  # records nothing meanwhile: only heartbeats
        raise KeyboardInterrupt

    exp = metalab.Experiment(name="quiet", version="1", operation=quiet_then_ctrl_c, params=metalab.grid(x=[1]))
    with pytest.raises(KeyboardInterrupt):
        metalab.run(exp, store=tmp_path, progress=False)
    written = lines(FileStore(tmp_path), exp.experiment_id)
    assert [line["status"] for line in written][-1] == INTERRUPTED
    beats = [line["heartbeat"] for line in written if line["status"] == RUNNING]
    assert len(beats) >= 3  # nothing new to say, yet a line every HEARTBEAT_EVERY
    assert metalab.load_results(tmp_path, exp).__len__() == 0  # not a finished run
    assert FileStore(tmp_path).finished_run_ids(exp.experiment_id) == set()


def test_a_provisional_line_that_cannot_be_written_never_stops_the_run(tmp_path, quick_progress):
    class FullDisk:
        def __init__(self) -> None:
            self.final: list[RunRecord] = []

        def write(self, record: RunRecord) -> int:
            if record.status == RUNNING:
                raise OSError(28, "No space left on device")
            self.final.append(record)
            return 1

        def close(self) -> None:
            pass

    exp = metalab.Experiment(name="full", version="1", operation=stepping,
                             params=metalab.manual([{"steps": 4, "pause": 0.15}]))
    sink = FullDisk()
    runner.run_serially(exp, list(exp.runs()), FileStore(tmp_path).files(exp.experiment_id), sink)
    assert [r.status for r in sink.final] == [SUCCESS] and len(sink.final[0].steps["loss"]) == 4


# -- standard logging in a run's log ---------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@metalab.operation
def chatty(params, seeds, capture):
    logging.getLogger("lab.model").info("info from the operation")
    logging.getLogger("lab.model").debug("debug from the operation")
    logging.getLogger("lab.model").warning("warning from the operation")
    logging.getLogger("lab.verbose").debug("debug from a logger set to DEBUG")
    logging.getLogger("lab.quiet").info("info from a logger set to ERROR")
    logging.getLogger("metalab.store").info("metalab's own chatter")
    logging.info("info on the root logger")  # noqa: LOG015 -- the root logger is what this test is about


@pytest.fixture
def logging_state():
    """The logging configuration as a user left it, put back afterwards."""
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.WARNING)
    on_root, on_child = Collect(), Collect()
    root.addHandler(on_root)
    logging.getLogger("lab").addHandler(on_child)
    logging.getLogger("lab.verbose").setLevel(logging.DEBUG)
    logging.getLogger("lab.quiet").setLevel(logging.ERROR)
    yield on_root, on_child
    root.removeHandler(on_root)
    logging.getLogger("lab").removeHandler(on_child)
    logging.getLogger("lab.verbose").setLevel(logging.NOTSET)
    logging.getLogger("lab.quiet").setLevel(logging.NOTSET)
    root.setLevel(saved)


def run_log(tmp_path: Path, exp: metalab.Experiment) -> str:
    (record_,) = metalab.load_results(tmp_path, exp)
    assert record_.log is not None
    return (tmp_path / exp.experiment_id / record_.log).read_text()


def test_info_reaches_the_run_log_and_every_other_handler_sees_what_it_saw_before(tmp_path, logging_state):
    on_root, on_child = logging_state
    exp = metalab.Experiment(name="chatty", version="1", operation=chatty, params=metalab.grid(x=[1]))
    metalab.run(exp, store=tmp_path, progress=False)
    log = run_log(tmp_path, exp)
    assert "INFO lab.model: info from the operation" in log
    assert "WARNING lab.model: warning from the operation" in log
    assert "INFO root: info on the root logger" in log
    assert "DEBUG lab.verbose: debug from a logger set to DEBUG" in log  # the user's level decides
    assert "debug from the operation" not in log and "set to ERROR" not in log
    assert "metalab's own chatter" not in log
    # the other handlers: exactly what they got without metalab (WARNING, and lab.verbose's DEBUG)
    expected = ["warning from the operation", "debug from a logger set to DEBUG"]
    assert on_root.messages == expected and on_child.messages == expected
    # and everything is as it was after the run
    assert logging.getLogger().level == logging.WARNING
    assert all(not h.filters for h in (on_root, on_child))
    logging.getLogger("lab.model").info("after the run")
    assert on_root.messages == expected


def test_a_root_level_the_user_chose_is_kept(tmp_path, logging_state):
    on_root, _ = logging_state
    logging.getLogger().setLevel(logging.DEBUG)
    exp = metalab.Experiment(name="chatty", version="2", operation=chatty, params=metalab.grid(x=[1]))
    metalab.run(exp, store=tmp_path, progress=False)
    log = run_log(tmp_path, exp)
    assert "DEBUG lab.model: debug from the operation" in log  # the user asked for DEBUG everywhere
    assert "debug from the operation" in on_root.messages and logging.getLogger().level == logging.DEBUG


def test_an_operation_that_sets_the_root_level_keeps_it(tmp_path, logging_state):
    @metalab.operation
    def configures(params, seeds, capture):
        logging.getLogger().setLevel(logging.ERROR)

    exp = metalab.Experiment(name="configures", version="1", operation=configures, params=metalab.grid(x=[1]))
    metalab.run(exp, store=tmp_path, progress=False)
    assert logging.getLogger().level == logging.ERROR


def test_worker_processes_write_their_runs_progress_too(tmp_path, quick_progress):
    """A forked worker starts its own watcher thread (the parent's, made by an earlier run here,
    stays behind in the parent)."""
    exp = metalab.Experiment(name="forked", version="1", operation=stepping,
                             params=metalab.manual([{"steps": 5, "pause": 0.15}, {"steps": 5, "pause": 0.16}]))
    metalab.run(exp, store=tmp_path / "here", progress=False)  # this process's watcher exists now
    results = metalab.run(exp, store=tmp_path, executor=metalab.ProcessExecutor(2), progress=False).result()
    assert [r.status for r in results] == [SUCCESS, SUCCESS]
    written = lines(FileStore(tmp_path), exp.experiment_id)
    assert {line["run_id"] for line in written if line["status"] == RUNNING} == {r.run_id for r in results}
