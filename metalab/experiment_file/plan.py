"""``metalab run FILE --dry``: the resolved plan as text, changing nothing and contacting no cluster."""

from __future__ import annotations

from typing import Any

from ..errors import MetalabError

__all__ = ["describe_plan"]


def describe_plan(loaded: Any) -> str:
    """What ``metalab run`` would do with ``loaded`` (an ExperimentFile): the experiment, the run
    counts, the store, and every executor setting with where it came from."""
    from ..executor.config import executor_settings
    from ..store import mask_locator

    experiment = loaded.experiment
    points, replicates = len(experiment.params), experiment.seeds.replicates
    lines = [
        f"experiment: {experiment.experiment_id} from {loaded.path} (operation {experiment.operation.reference})",
        f"runs: {_run_counts(loaded, f'{points} parameter point(s) x {replicates} replicate(s)')}",
        f"store: {mask_locator(loaded.store)}" + (f" (services of profile {loaded.env})" if loaded.store == "discover" and loaded.env else ""),
    ]
    plan = loaded.executor
    source = f", defaults from profile {plan.profile}" if plan.profile else ", no profile defaults"
    lines.append(f"executor: {plan.kind}{source}")
    rows = [(key, _shown(value), origin) for key, value, origin in executor_settings(plan)]
    width = max((len(key) for key, _, _ in rows), default=0)
    value_width = max((len(value) for _, value, _ in rows), default=0)
    lines.extend(f"  {key:<{width}}  {value:<{value_width}}  {origin}" for key, value, origin in rows)
    return "\n".join(lines)


def _run_counts(loaded: Any, shape: str) -> str:
    total = len(loaded.experiment)
    if loaded.executor.kind == "slurm":
        return f"{total} total ({shape}); the cluster counts those already done when they are submitted: --dry contacts no cluster"
    try:
        store = loaded.open_store()
        done = store.finished_run_ids(loaded.experiment.experiment_id) if loaded.resume else set()
    except MetalabError as error:
        return f"{total} total ({shape}); already done unknown: {error}"
    finished = sum(1 for spec in loaded.experiment.runs() if spec.run_id in done)
    return f"{total} total, {finished} already done, {total - finished} to run ({shape})"


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) if value else "[]"
    return str(value)
