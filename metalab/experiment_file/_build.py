"""From checked experiment-file data to metalab's objects: the Experiment, its store, its executor plan."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..executor.defaults import ExecutorPlan, plan_executor
from ._schema import Problem

__all__ = ["executor_plan", "experiment", "store"]

_POSTGRES = ("postgresql://", "postgres://")


def store(data: Mapping[str, Any], folder: Path) -> str:
    """``discover`` and locators as written; a folder (default ``experiments``) beside the file."""
    value = data.get("store", "experiments")
    if value == "discover" or value.startswith(_POSTGRES):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else folder / path)


def executor_plan(data: Mapping[str, Any], *, env: str | None, folder: Path, environ: Mapping[str, str], where: Any) -> ExecutorPlan:
    """The project's defaults for the file's executor type under the file's options, each
    option checked by the executor type's own schema."""
    from ..executor.config import ExecutorOptionError, executor_settings

    section = dict(data.get("executor") or {})
    kind = section.pop("type", None)
    origins = {key: where.of(("executor", key)) for key in section}
    try:
        plan = plan_executor(kind, section, profile=env, given_origin=origins, start=folder, environ=environ)
        executor_settings(plan)  # every option against its schema, now, before anything runs
    except ExecutorOptionError as error:
        key = ("executor", error.key)
        raise ConfigError(where.line(Problem(key, error.reason)) if error.key in section
                          else f"{plan.origins.get(error.key, 'executor')}: {error.key}: {error.reason}") from None
    except ConfigError as error:
        cause = ("executor", "type") if kind is not None else ("env",)
        raise ConfigError(f"{where.of(cause)}: {error}") from None
    return plan


def experiment(data: Mapping[str, Any], *, folder: Path, environ: Mapping[str, str], where: Any) -> Any:
    """The Experiment the file defines."""
    from ..experiment import Experiment
    from ..seeding import seeds

    operation = _operation(data["operation"], _search_folders(folder, environ), where)
    seed_plan = data.get("seeds") or {}
    return Experiment(
        name=data["name"],
        version=str(data["version"]),
        operation=operation,
        params=_params(data["params"]),
        seeds=seeds(base=seed_plan.get("base", 0), replicates=seed_plan.get("replicates", 1)),
        context=data.get("context") or {},
        hash_source=data.get("hash_source", False),
    )


def _params(params: Mapping[str, Any]) -> Any:
    from .. import params as sources

    if "grid" in params:
        return sources.grid(**params["grid"])
    if "manual" in params:
        return sources.manual(params["manual"])
    space = dict(params["random"])
    count, seed = space.pop("count"), space.pop("seed", 0)
    return sources.random(count=count, seed=seed, **{name: _distribution(spec) for name, spec in space.items()})


def _distribution(spec: Any) -> Any:
    from .. import params as sources

    if isinstance(spec, list):
        return sources.choice(spec)
    ((kind, args),) = spec.items()
    return sources.choice(args) if kind == "choice" else getattr(sources, kind)(*args)


def _search_folders(folder: Path, environ: Mapping[str, str]) -> list[Path]:
    """The file's folder, then the project's root (where ``.metalab.toml`` is)."""
    from ..config import find_config

    config = find_config(folder, environ)
    return [folder, *([config.parent] if config is not None and config.parent != folder else [])]


def _operation(reference: str, folders: list[Path], where: Any) -> Any:
    """Import ``module:function`` with ``folders`` first on the path; a plain function is
    wrapped as an operation. A single-file module from those folders ships its text to tasks."""
    from ..operations import Operation

    module_name, _, qualname = reference.partition(":")
    for entry in reversed(folders):
        if str(entry) not in sys.path:
            sys.path.insert(0, str(entry))
    local_file = next((f / f"{module_name}.py" for f in folders if "." not in module_name and (f / f"{module_name}.py").is_file()), None)

    def fail(message: str) -> ConfigError:
        return ConfigError(where.line(Problem(("operation",), message)))

    try:
        module = _import(module_name, local_file)
    except ModuleNotFoundError as error:
        if error.name != module_name.split(".")[0]:
            raise fail(f"importing {module_name} failed: {error}") from None
        looked = " and ".join(str(f) for f in folders)
        raise fail(f"no module {module_name!r} in {looked} or the installed packages") from None
    except Exception as error:  # noqa: BLE001 -- the user's module may raise anything: say which, on one line
        raise fail(f"importing {module_name} raised {type(error).__name__}: {' '.join(str(error).split())}") from None
    target: Any = module
    for part in qualname.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
            raise fail(f"{module_name} has no {qualname!r}{did_you_mean(qualname, names)}")
        target = getattr(target, part)
    if not callable(target):
        raise fail(f"{reference} is not a function")
    operation = target if isinstance(target, Operation) else Operation(target)
    if local_file is not None:
        operation.ships_source = local_file
    return operation


def _import(module_name: str, local_file: Path | None) -> Any:
    """The module; a module of the same name imported earlier from elsewhere (another experiment
    file's ``train.py``) does not shadow this folder's."""
    loaded = sys.modules.get(module_name)
    if local_file is None or (loaded is not None and getattr(loaded, "__file__", None) == str(local_file)):
        return importlib.import_module(module_name)
    spec = importlib.util.spec_from_file_location(module_name, local_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
