"""Run labels (the params an experiment varies, the replicate) and when an experiment is running:
pure functions, no database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import metalab
from metalab.atlas.index import ACTIVE_GRACE, experiment_active
from metalab.atlas.labels import labeller, run_label, varying_params


def described(params, replicates: int = 3) -> dict:
    @metalab.operation
    def op(params, seeds, capture):
        pass

    return metalab.Experiment(name="l", version="1", operation=op, params=params,
                              seeds=metalab.seeds(base=1, replicates=replicates)).describe()


def test_a_grid_names_the_axes_with_more_than_one_value() -> None:
    description = described(metalab.grid(width=[64, 128], lr=[0.01, 0.1], opt=["adam"]))
    assert varying_params(description, ["lr", "opt", "width"]) == ["lr", "width"]
    label = labeller(description, ["lr", "opt", "width"])
    run = {"run_id": "0123456789abcdef", "params": {"lr": 0.01, "width": 64, "opt": "adam"}, "replicate": 2}
    assert label(run) == "lr=0.01 width=64 #2"
    assert label(run) == label(dict(run))  # a pure function of the run: the same on every page


def test_a_random_search_names_its_distributions_but_a_single_choice() -> None:
    space = metalab.random(lr=metalab.loguniform(1e-4, 1e-1), layers=metalab.choice([2]), act=["relu", "gelu"],
                           count=4, seed=0)
    description = described(space, replicates=1)
    assert varying_params(description, ["act", "layers", "lr"]) == ["act", "lr"]
    label = labeller(description, [])
    assert label({"run_id": "r", "params": {"lr": 0.00123456, "layers": 2, "act": "gelu"}, "replicate": 0}) == (
        "act=gelu lr=0.001235")  # one replicate: no "#0"; floats to 4 significant digits


def test_a_manual_list_names_every_param_and_nothing_varying_falls_back_to_the_id() -> None:
    description = described(metalab.manual([{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]), replicates=1)
    assert varying_params(description, ["b", "a"]) == ["a", "b"]
    assert labeller(described(metalab.grid(only=[1]), replicates=1), ["only"])(
        {"run_id": "0123456789abcdef", "params": {"only": 1}, "replicate": 0}) == "0123456789"
    assert labeller(described(metalab.grid(only=[1]), replicates=2), ["only"])(
        {"run_id": "0123456789abcdef", "params": {"only": 1}, "replicate": 1}) == "#1"


def test_values_stay_short_and_an_unknown_description_still_labels() -> None:
    long = "a-rather-long-dataset-name-v2"
    assert run_label({"data": long, "flag": True, "n": None, "shape": [1, 2]}, 0, ["data", "flag", "n", "shape"], 1,
                     "r") == "data=a-rather-long-dataset-n… flag=true n=null shape=[1,2]"
    assert run_label({"x": float("nan")}, 3, ["x"], None, "r") == "x=nan #3"  # replicates unknown: shown when not 0
    assert labeller({}, ["x"])({"run_id": "r", "params": {"x": 1.5}, "replicate": 0}) == "x=1.5"


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def test_an_experiment_is_running_while_a_run_is_in_progress_and_not_after_its_last_run() -> None:
    recent, old = NOW - timedelta(seconds=1), NOW - ACTIVE_GRACE - timedelta(seconds=1)
    assert experiment_active(live=1, finished=180, expected=180, last_activity=old, now=NOW)  # a rerun in progress
    # every run finished: no badge, however recent the last one (it used to stay two minutes)
    assert not experiment_active(live=0, finished=180, expected=180, last_activity=recent, now=NOW)
    # between two runs of a sweep (nothing in progress for a moment): still running
    assert experiment_active(live=0, finished=12, expected=180, last_activity=recent, now=NOW)
    # a sweep that stopped short: not running once nothing landed for a while
    assert not experiment_active(live=0, finished=12, expected=180, last_activity=old, now=NOW)
    assert not experiment_active(live=0, finished=0, expected=None, last_activity=recent, now=NOW)
