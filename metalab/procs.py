"""Processes metalab starts and later finds again: identity, liveness, and stopping them.

A pid alone can be reused by the kernel; a pid together with the process's start time names one
process for good, so every record keeps both, and the checks that decide whether to signal a
process also match its command line (what metalab started it as). psutil reads them alike on
Linux and macOS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = [
    "DEFAULT_KILL_AFTER",
    "exit_reason",
    "interrupts",
    "is_alive",
    "process_age",
    "process_start",
    "stop_child",
    "stop_process",
    "wait_gone",
]

DEFAULT_KILL_AFTER = 5.0
START_TOLERANCE = 0.05  # seconds: start times are recorded to 10 ms


def process_start(pid: int) -> float | None:
    """The process's start time (Unix seconds, to 10 ms), or ``None`` if there is no such process
    (a zombie has exited; only its parent's wait() is missing)."""
    if pid <= 0:
        return None  # 0 is the kernel's scheduler, and a dry run's placeholder
    import psutil  # here: every command imports this module for interrupts(), few look at processes

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return round(process.create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def process_age(start: float) -> float:
    """Seconds since a process with start time ``start`` (see :func:`process_start`) began."""
    return max(0.0, time.time() - start)


def is_alive(pid: int, start: float | None = None, command: Sequence[str] = ()) -> bool:
    """True when ``pid`` runs and, if ``start`` is given, is the very process recorded then, and
    its command line holds every string of ``command`` (what metalab started it as)."""
    current = process_start(pid)
    if current is None or (start is not None and abs(current - start) > START_TOLERANCE):
        return False
    if not command:
        return True
    import psutil

    try:
        argv = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return all(part in argv for part in command)


def wait_gone(pid: int, start: float | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to exit; True once it has."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while is_alive(pid, start):
        _reap(pid)
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def stop_process(
    pid: int,
    start: float | None,
    *,
    command: Sequence[str] = (),
    sig: int = signal.SIGTERM,
    kill_after: float = DEFAULT_KILL_AFTER,
    group: bool = False,
) -> bool:
    """Send ``sig``; if the process is still there after ``kill_after`` s, SIGKILL it. Nothing
    is sent unless it is the process recorded (``start``) and started as ``command`` says.

    With ``group`` the signals go to the process group the process leads, so helpers it
    forked (PostgreSQL's backends) go with it. Returns False if it was not running.
    """
    if not is_alive(pid, start, command):
        return False
    _signal(pid, sig, group)
    if not wait_gone(pid, start, kill_after):
        _signal(pid, signal.SIGKILL, group)
        wait_gone(pid, start, kill_after)
    return True


def stop_child(process: subprocess.Popen, kill_after: float = DEFAULT_KILL_AFTER) -> None:
    """Terminate a child this process started and reap it; SIGKILL it if it outlives ``kill_after`` s."""
    process.terminate()
    try:
        process.wait(kill_after)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    # A child of this very process stays a zombie until waited for; collect it if it is ours.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def exit_reason(pid: int) -> str | None:
    """How a child of this process ended ("exited with code 1", "was killed by SIGKILL"), reaping
    it; ``None`` while it runs. A process that is not our child has just "exited"."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if process_start(pid) is not None else "exited"
    if done == 0:
        return None
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


@contextmanager
def interrupts(*signals: int) -> Iterator[None]:
    """Within the block, ``signals`` (SIGTERM, SIGHUP) end it as Ctrl+C does: KeyboardInterrupt
    in the main thread, so the same cleanup runs whichever way a command is stopped."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
