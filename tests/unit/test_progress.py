from __future__ import annotations

import io
import re
import threading
import time

import pytest

import metalab.progress as progress
from metalab.progress import RunProgress


class FakeStream(io.StringIO):
    """A stream that says whether it is a terminal; what it gets written stays readable."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def no_ticker() -> bool:
    return not any(t.name == "metalab-progress" for t in threading.enumerate())


def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def lines(stream: FakeStream) -> list[str]:
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text == "" or text.endswith("\n")  # whole lines only
    return text.splitlines()


def test_log_lines_are_plain_and_count_done_and_failed():
    stream = FakeStream(tty=False)
    meter = RunProgress(10, stream=stream, interval=0.05)  # enabled=None: on, even off a terminal
    meter.update(done=3, failed=2)
    assert wait_for(lambda: "3/10" in stream.getvalue())
    meter.close()
    first, *_, last = lines(stream)
    assert "3/10" in first and "failed=2" in first and ("run/s" in first or "s/run" in first)
    assert "3/10" in last and "failed=2" in last
    assert no_ticker()


def test_log_line_follows_a_change_within_the_interval_and_not_without_one():
    stream = FakeStream(tty=False)
    meter = RunProgress(10, stream=stream, interval=0.05)
    time.sleep(0.2)
    assert stream.getvalue() == ""  # nothing moved, heartbeat far off
    meter.update(done=1)
    assert wait_for(lambda: "1/10" in stream.getvalue(), timeout=0.5)
    meter.update(done=2, failed=1)
    assert wait_for(lambda: "3/10" in stream.getvalue(), timeout=0.5)
    count = len(lines(stream))
    time.sleep(0.2)
    assert len(lines(stream)) == count  # no change, no new line
    meter.close()
    assert len(lines(stream)) == count + 1 and "failed=1" in lines(stream)[-1]


def test_log_heartbeat_when_nothing_changes(monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT", 0.1)
    stream = FakeStream(tty=False)
    meter = RunProgress(5, stream=stream, interval=0.05)
    assert wait_for(lambda: len(stream.getvalue().splitlines()) >= 2)
    meter.close()
    assert all("0/5" in line for line in lines(stream))


def test_log_final_line_at_close_even_right_away():
    stream = FakeStream(tty=False)
    meter = RunProgress(4, stream=stream)  # default 5 s interval: only close() prints here
    meter.update(done=4, failed=1)
    meter.close()
    (line,) = lines(stream)
    assert "4/4" in line and "failed=1" in line and "100%" in line


def test_terminal_bar_redraws_in_place_and_ends_with_a_newline():
    stream = FakeStream(tty=True)
    meter = RunProgress(10, enabled=True, stream=stream)
    meter.update(done=3, failed=2)
    meter.close()
    text = stream.getvalue()
    assert "\r" in text and text.endswith("\n") and text.count("\n") == 1
    final = text.rstrip("\n").split("\r")[-1]
    assert "3/10" in final and "failed=2" in final
    assert no_ticker()


def test_terminal_bar_keeps_ticking_without_updates(monkeypatch):
    monkeypatch.setattr(progress, "TICK", 0.05)
    stream = FakeStream(tty=True)
    meter = RunProgress(10, stream=stream)
    meter.update(done=1)
    assert wait_for(lambda: "00:01<" in stream.getvalue())  # elapsed moved with no run finishing
    meter.close()
    draws = stream.getvalue().split("\r")
    elapsed = {m.group(1) for d in draws if (m := re.search(r"\[(\d\d:\d\d)<", d))}
    assert {"00:00", "00:01"} <= elapsed and len(draws) > 10


def test_write_puts_a_line_above_the_terminal_bar():
    stream = FakeStream(tty=True)
    meter = RunProgress(3, stream=stream)
    meter.write("exp: 2 of 5 runs already done")
    meter.close()
    assert "\rexp: 2 of 5 runs already done\n" in stream.getvalue()


def test_runs_already_done_count_but_do_not_inflate_the_rate():
    stream = FakeStream(tty=False)
    meter = RunProgress(10, stream=stream, done=6, failed=1)
    time.sleep(0.05)
    meter.close()
    (line,) = lines(stream)
    assert "6/10" in line and "failed=1" in line and "?run/s" in line  # 0 new runs: no rate yet


@pytest.mark.parametrize("tty", [True, False])
def test_disabled_prints_nothing_and_starts_no_thread(tty):
    stream = FakeStream(tty=tty)
    meter = RunProgress(4, enabled=False, stream=stream, interval=0.01)
    assert no_ticker()
    meter.update(done=2, failed=1)
    assert (meter.done, meter.failed, meter.total) == (2, 1, 4)
    meter.close()
    assert stream.getvalue() == "" and no_ticker()


@pytest.mark.parametrize("tty", [True, False])
def test_nothing_to_run_is_silent(tty):
    stream = FakeStream(tty=tty)
    meter = RunProgress(0, enabled=True, stream=stream, interval=0.01)
    assert no_ticker()
    meter.close()
    assert stream.getvalue() == ""


@pytest.mark.parametrize("tty", [True, False])
def test_close_twice_is_fine_and_leaves_no_thread(tty):
    stream = FakeStream(tty=tty)
    meter = RunProgress(2, stream=stream)
    meter.update(done=2)
    meter.close()
    written = stream.getvalue()
    meter.close()
    meter.update(done=1)  # late updates still count, print nothing
    assert stream.getvalue() == written and meter.done == 3 and no_ticker()


def test_updates_from_many_threads_while_ticking(monkeypatch):
    monkeypatch.setattr(progress, "TICK", 0.01)
    stream = FakeStream(tty=True)
    meter = RunProgress(400, stream=stream)

    def work() -> None:
        for n in range(50):
            meter.update(done=1, failed=n % 10 == 0)

    workers = [threading.Thread(target=work) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    meter.close()
    assert (meter.done, meter.failed) == (400, 40)
    assert "400/400" in stream.getvalue().split("\r")[-1] and "failed=40" in stream.getvalue().split("\r")[-1]


def test_importing_the_module_leaves_tqdm_unimported():
    import subprocess
    import sys

    code = "import sys, metalab.progress; print('tqdm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
