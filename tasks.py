"""Repository tasks: metalab's own namespace plus the developer tasks (test, bench, lint).

    inv --list
    inv env.show slurm
    inv test            # what CI runs, once the tools are installed (see scripts/test.sh)
"""

from __future__ import annotations

import sys

from invoke import Collection, task

from metalab.tasks import ns as metalab_ns


@task(help={"args": "Extra arguments for pytest, e.g. '-k config -x'."})
def test(c, args=""):
    """Run the whole test suite with pytest (fails when nothing was collected)."""
    c.run(f"{sys.executable} -m pytest {args}", pty=False)


@task(help={"name": "One benchmark (e.g. startup); default: all of them."})
def bench(c, name=""):
    """Run the benchmarks in bench/ and print their figures."""
    from pathlib import Path

    scripts = sorted(p for p in Path("bench").glob(f"{name or '*'}.py") if not p.name.startswith("_"))
    for script in scripts:
        c.run(f"{sys.executable} {script}")


@task
def lint(c):
    """Check the code with ruff (the version the test extra pins; the rules in pyproject.toml), as scripts/test.sh does."""
    c.run(f"{sys.executable} -m ruff check metalab tests bench tasks.py")


ns = Collection()
for name, collection in metalab_ns.collections.items():
    ns.add_collection(collection, name=name)
for name in metalab_ns.tasks:
    ns.add_task(metalab_ns.tasks[name], name=name)
ns.configure(metalab_ns.configuration())
ns.add_task(test)
ns.add_task(bench)
ns.add_task(lint)
