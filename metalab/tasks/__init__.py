"""metalab's Invoke namespace: ``ns`` is the root collection behind ``metalab`` and ``inv``.

Task modules import nothing heavy at import time, so ``inv --list`` and
``metalab --help`` stay as fast as Invoke itself.
"""

from __future__ import annotations

from invoke import Collection

from . import env, experiment, project, services, tunnel
from .env import env_collection
from .services import services_collection

__all__ = ["env", "experiment", "ns", "project", "services", "tunnel"]

ns = Collection()
ns.add_collection(env_collection)
ns.add_collection(services_collection)
ns.add_task(project.init)
ns.add_task(tunnel.tunnel)
for _task in experiment.experiment_collection.tasks.values():  # `metalab run FILE`; experiment.run in tasks.py
    ns.add_task(_task)
ns.configure({"metalab": {"verbose": False}})
