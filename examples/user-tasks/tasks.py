"""A researcher's own tasks file that chains metalab's services before its work.

    cd examples/user-tasks
    inv analyse                      # brings the services up first (or reuses them)
    METALAB_ENV=local inv analyse    # the environment comes from METALAB_ENV or default_env
    inv --list                       # metalab's tasks sit beside the user's own
"""

import os
from pathlib import Path

from invoke import Collection, task

from metalab.bundle import discover
from metalab.tasks import services
from metalab.tasks.services import up


@task(pre=[up])
def analyse(c):
    """Run the analysis once PostgreSQL and Atlas are up."""
    bundle = discover(Path.cwd(), os.environ)
    print(f"analysing against {bundle.store_locator}")


ns = Collection(analyse)
ns.add_collection(services.services_collection)
