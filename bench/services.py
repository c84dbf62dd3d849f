"""Local services: metalab's `up`, `status` and `down` against raw PostgreSQL and Invoke.

    python bench/services.py [--cold-rounds N] [--warm-rounds N]

Budgets (issue 3), measured side by side in one run:
  cold `up` (PostgreSQL initialised and ready, Atlas ready, bundle written) ≤ 1.5 × raw initdb + pg_ctl -w start
  warm `up` (reuse) and `status` ≤ 1.3 × `inv --list` over a trivial tasks file
  `down` < 1 s
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import alternate, time_command  # noqa: E402

BIN = Path(sys.executable).parent
TRIVIAL_TASKS = "from invoke import task\n" + "".join(f"\n@task\ndef t{i}(c):\n    '''Trivial {i}.'''\n" for i in range(6))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project(root: Path) -> Path:
    root.mkdir(mode=0o755)
    (root / ".metalab.toml").write_text(
        "[project]\nname = \"bench\"\ndefault_env = \"local\"\n[services.postgres]\n"
        f"[services.atlas]\nport = {free_port()}\n[environments.local]\ntype = \"local\"\nfile_root = \"./runs\"\n"
    )
    return root


def pg_bin() -> Path:
    return max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def raw_postgres(work: Path) -> float:
    """initdb + pg_ctl -w start (what metalab's cold path must do at minimum), then clean up."""
    data = Path(tempfile.mkdtemp(dir=work))
    os.chmod(data, 0o755)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    bindir, port = pg_bin(), free_port()
    start = time.perf_counter()
    subprocess.run(as_postgres([str(bindir / "initdb"), "-D", f"{data}/d", "--auth-local=trust",
                                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]),
                   check=True, capture_output=True)
    subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", f"{data}/d", "-l", f"{data}/log", "-w", "-s",
                                "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {data}", "start"]),
                   check=True, capture_output=True)
    took = time.perf_counter() - start
    subprocess.run(as_postgres([str(bindir / "pg_ctl"), "-D", f"{data}/d", "-m", "fast", "-s", "stop"]), check=True)
    shutil.rmtree(data)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-rounds", type=int, default=5)
    parser.add_argument("--warm-rounds", type=int, default=21)
    args = parser.parse_args()
    metalab = str(BIN / "metalab")
    work = Path(tempfile.mkdtemp(prefix="metalab-bench-", dir="/tmp"))
    os.chmod(work, 0o755)
    downs: list[float] = []
    counter = iter(range(10**6))

    def cold_up() -> float:
        root = project(work / f"cold{next(counter)}")
        took = time_command([metalab, "services", "up", "-q"], cwd=str(root))
        downs.append(time_command([metalab, "services", "down", "-q"], cwd=str(root)))
        shutil.rmtree(root)
        return took

    try:
        cold = alternate({"raw initdb + pg_ctl start": lambda: raw_postgres(work), "metalab services up (cold)": cold_up},
                         args.cold_rounds)
        trivial = work / "trivial"
        trivial.mkdir()
        (trivial / "tasks.py").write_text(TRIVIAL_TASKS)
        warm_root = project(work / "warm")
        subprocess.run([metalab, "services", "up", "-q"], cwd=warm_root, check=True)
        warm = alternate(
            {
                "inv --list (6 trivial tasks)": lambda: time_command([str(BIN / "inv"), "--list"], cwd=str(trivial)),
                "metalab services up (warm)": lambda: time_command([metalab, "services", "up", "-q"], cwd=str(warm_root)),
                "metalab services status": lambda: time_command([metalab, "services", "status"], cwd=str(warm_root)),
            },
            args.warm_rounds,
        )
        subprocess.run([metalab, "services", "down", "-q"], cwd=warm_root, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    raw, cold_up_s = cold["raw initdb + pg_ctl start"], cold["metalab services up (cold)"]
    base = warm["inv --list (6 trivial tasks)"]
    down_s = sorted(downs)[len(downs) // 2]
    print(f"services: medians, cold over {args.cold_rounds} rounds, warm over {args.warm_rounds} (alternating)")
    print(f"  raw initdb + pg_ctl start      {raw * 1000:7.0f} ms")
    print(f"  metalab services up (cold)     {cold_up_s * 1000:7.0f} ms   ratio {cold_up_s / raw:4.2f}  (budget 1.50)")
    print(f"  inv --list (6 trivial tasks)   {base * 1000:7.0f} ms")
    for name in ("metalab services up (warm)", "metalab services status"):
        print(f"  {name:<30} {warm[name] * 1000:7.0f} ms   ratio {warm[name] / base:4.2f}  (budget 1.30)")
    print(f"  metalab services down          {down_s * 1000:7.0f} ms   (budget < 1000 ms)")


if __name__ == "__main__":
    main()
