"""``env`` tasks: list the environment profiles and show one fully merged."""

from __future__ import annotations

import os

from invoke import Collection

from ._common import chosen_env, emit_json, loaded_config, metalab_task

__all__ = ["env_collection", "list_profiles", "show"]


@metalab_task(name="list", help={"json": "Print machine-readable JSON.", "env": "Mark this profile as active."})
def list_profiles(c, env=None, json=False):
    """List the environment profiles, marking the active one."""
    from ..config import render, select_environment

    loaded = loaded_config(c)
    active, _ = select_environment(
        list(loaded.config.environments),
        flag=chosen_env(c, env),
        environ=os.environ,
        default_env=loaded.config.project.default_env,
        config_path=loaded.path,
    )
    rows = render.list_profiles(loaded, active)
    if json:
        emit_json({"config": str(loaded.path), "active": active, "environments": rows})
    else:
        print(render.format_profile_list(rows))


@metalab_task(
    help={
        "name": "Profile to show (default: the active one).",
        "env": "Same as NAME: the profile to show.",
        "json": "Print machine-readable JSON.",
    }
)
def show(c, name=None, env=None, json=False):
    """Show one environment profile with every layer merged (secrets masked)."""
    from ..config import render, resolve_environment

    loaded = loaded_config(c)
    resolved = resolve_environment(loaded, flag=name or chosen_env(c, env), environ=os.environ)
    view = render.describe_profile(resolved.name, resolved.profile, resolved.services)
    if json:
        emit_json(view)
    else:
        print(render.format_profile(view))


env_collection = Collection("env")
env_collection.add_task(list_profiles, default=True)
env_collection.add_task(show)
