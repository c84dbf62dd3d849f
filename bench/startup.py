"""Start-up cost of ``metalab --help`` and ``inv --list`` against Invoke on a trivial tasks file.

    python bench/startup.py [--rounds N]

Budget (issue 2): each ratio to the trivial ``inv --list`` ≤ 1.2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import alternate, time_command  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TRIVIAL_TASKS = "from invoke import task\n" + "".join(
    f"\n@task\ndef t{i}(c):\n    '''Trivial task {i}.'''\n" for i in range(6)
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as trivial:
        Path(trivial, "tasks.py").write_text(TRIVIAL_TASKS)
        medians = alternate(
            {
                "inv --list (6 trivial tasks)": lambda: time_command([str(BIN / "inv"), "--list"], cwd=trivial),
                "metalab --help": lambda: time_command([str(BIN / "metalab"), "--help"], cwd=trivial),
                "inv --list (repository)": lambda: time_command([str(BIN / "inv"), "--list"], cwd=str(REPO)),
            },
            args.rounds,
        )
    baseline = medians["inv --list (6 trivial tasks)"]
    print(f"startup: median wall time over {args.rounds} alternating rounds")
    for name, seconds in medians.items():
        print(f"  {name:<30} {seconds * 1000:7.1f} ms   ratio {seconds / baseline:4.2f}")
    worst = max(medians.values()) / baseline
    print(f"worst ratio {worst:.2f} (budget 1.20): {'OK' if worst <= 1.2 else 'OVER BUDGET'}")


if __name__ == "__main__":
    main()
