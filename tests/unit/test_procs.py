"""How metalab tells how a process it started ended, and stops commands on SIGTERM/SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from metalab.procs import exit_reason, interrupts


def test_exit_reason_names_the_code_or_the_signal():
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    assert exit_reason(killed.pid) is None  # still running
    killed.send_signal(signal.SIGKILL)
    for proc, expected in ((exited, "exited with code 3"), (killed, "was killed by SIGKILL")):
        deadline = time.monotonic() + 10
        while (reason := exit_reason(proc.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reason == expected
        proc.returncode = 0  # reaped above; keep Popen from waiting again


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_interrupts_turn_sigterm_and_sighup_into_ctrl_c_and_restore_the_handlers(signum):
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt), interrupts(signal.SIGTERM, signal.SIGHUP):
        os.kill(os.getpid(), signum)
        time.sleep(5)
    assert signal.getsignal(signum) == before
