"""Experiment files: what they define (the same runs as Python), strict checks naming file, line
and key, overrides, and executor defaults merged from the project exactly as documented."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from pathlib import Path

import pytest

import metalab
from metalab.errors import ConfigError
from metalab.executor.config import executor_from_config, executor_settings
from metalab.experiment_file import load_experiment_file

DOC_TOML = Path(__file__).resolve().parents[1] / "cli" / "doc_example.toml"
DOC_LOCAL_TOML = DOC_TOML.with_name("doc_example.local.toml")

OPERATION = '''
import metalab

@metalab.operation
def train(params, seeds, capture):
    capture.metric("loss", params["lr"] * 2)

def plain(params, seeds, capture):
    capture.metric("loss", 1.0)

NOT_A_FUNCTION = 3
'''

BASE = """\
name: sweep
version: 2
operation: {module}:train
params:
  grid:
    lr: [0.1, 0.01]
    width: [16, 64]
seeds:
  base: 5
  replicates: 3
context:
  dataset: synthetic
"""


@pytest.fixture
def folder(tmp_path, monkeypatch, request):
    """A folder with an operation module named uniquely for the test (no .metalab.toml)."""
    for name in list(__import__("os").environ):
        if name.startswith("METALAB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    module = "op_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]  # unique: modules are cached
    (tmp_path / f"{module}.py").write_text(OPERATION)
    tmp_path.joinpath("module_name").write_text(module)
    return tmp_path


def write(folder: Path, text: str, name: str = "exp.yaml") -> Path:
    module = (folder / "module_name").read_text()
    path = folder / name
    path.write_text(textwrap.dedent(text).replace("{module}", module))
    return path


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        load_experiment_file(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- what a file defines


def test_a_grid_file_defines_the_same_runs_as_the_same_experiment_in_python(folder):
    loaded = load_experiment_file(write(folder, BASE))
    operation = loaded.experiment.operation
    python = metalab.Experiment(name="sweep", version="2", operation=operation, context={"dataset": "synthetic"},
                                params=metalab.grid(lr=[0.1, 0.01], width=[16, 64]),
                                seeds=metalab.seeds(base=5, replicates=3))
    assert [s.run_id for s in loaded.experiment.runs()] == [s.run_id for s in python.runs()]
    assert len(loaded.experiment) == 12 and loaded.experiment.describe() == python.describe()
    assert loaded.store == str(folder / "experiments") and loaded.resume is True and loaded.env is None
    assert loaded.executor.kind == "local" and loaded.executor.settings == {}


def test_random_and_manual_files_match_python_with_every_distribution(folder):
    random_file = write(folder, """\
        name: r
        version: 1
        operation: {module}:train
        params:
          random:
            count: 7
            seed: 11
            lr: {loguniform: [1e-4, 1e-1]}
            dropout: {uniform: [0.0, 0.5]}
            layers: {randint: [1, 4]}
            noise: {normal: [0, 0.1]}
            act: {choice: [relu, tanh]}
            width: [32, 64]
        """)
    loaded = load_experiment_file(random_file).experiment
    python = metalab.Experiment(name="r", version="1", operation=loaded.operation, params=metalab.random(
        count=7, seed=11, lr=metalab.loguniform(1e-4, 1e-1), dropout=metalab.uniform(0.0, 0.5),
        layers=metalab.randint(1, 4), noise=metalab.normal(0, 0.1), act=metalab.choice(["relu", "tanh"]),
        width=[32, 64]))
    assert [s.params for s in loaded.runs()] == [s.params for s in python.runs()]
    assert [s.run_id for s in loaded.runs()] == [s.run_id for s in python.runs()]
    manual = write(folder, """\
        name: m
        version: 1
        operation: {module}:plain
        params:
          manual:
            - {lr: 0.1, width: 8}
            - {lr: 0.2, width: 16}
        """, "manual.yaml")
    loaded = load_experiment_file(manual).experiment
    assert [s.params for s in loaded.runs()] == [{"lr": 0.1, "width": 8}, {"lr": 0.2, "width": 16}]


def test_an_operation_beside_the_file_ships_its_source_to_tasks(folder):
    loaded = load_experiment_file(write(folder, BASE))
    spec = loaded.experiment.operation.import_spec()
    assert spec["script_path"] == str(folder / f"{(folder / 'module_name').read_text()}.py")
    assert "def train" in spec["script_source"] and spec["qualname"] == "train"


def test_two_files_with_a_module_of_the_same_name_each_get_their_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, factor in (("a", 2), ("b", 3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "samename_train.py").write_text(
            f"def train(params, seeds, capture):\n    capture.metric('y', params['x'] * {factor})\n")
        (tmp_path / name / "exp.yaml").write_text(
            f"name: {name}\nversion: 1\noperation: samename_train:train\nparams:\n  grid:\n    x: [1]\n")
    first = load_experiment_file(tmp_path / "a" / "exp.yaml").experiment
    second = load_experiment_file(tmp_path / "b" / "exp.yaml").experiment
    assert [r.metrics["y"] for r in metalab.run(first, store=tmp_path / "s", progress=False).result()] == [2]
    assert [r.metrics["y"] for r in metalab.run(second, store=tmp_path / "s", progress=False).result()] == [3]


def test_an_operation_module_in_the_project_root_is_found_from_a_subfolder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".metalab.toml").write_text('[environments.local]\ntype = "local"\n')
    (tmp_path / "rootlevel_ops.py").write_text("def train(params, seeds, capture):\n    capture.metric('y', 1)\n")
    (tmp_path / "sweeps").mkdir()
    path = tmp_path / "sweeps" / "exp.yaml"
    path.write_text("name: r\nversion: 1\noperation: rootlevel_ops:train\nparams:\n  grid:\n    x: [1]\n")
    operation = load_experiment_file(path).experiment.operation
    assert operation.ships_source == tmp_path / "rootlevel_ops.py"


def test_store_paths_are_the_files_folder_s_and_locators_pass_as_written(folder, tmp_path):
    sub = folder / "sub"
    sub.mkdir()
    shutil.copy(folder / f"{(folder / 'module_name').read_text()}.py", sub)
    (sub / "module_name").write_text((folder / "module_name").read_text())
    assert load_experiment_file(write(sub, BASE + "store: runs/\n")).store == str(sub / "runs")
    assert load_experiment_file(write(sub, BASE + "store: discover\n")).store == "discover"
    locator = "postgresql://me@127.0.0.1:5/db?file_root=/x"
    assert load_experiment_file(write(sub, BASE + f"store: '{locator}'\n")).store == locator


def test_yaml_1_2_exponent_floats_are_numbers(folder):
    text = BASE.replace("lr: [0.1, 0.01]", "lr: [1e-3, 2.5E-2]")
    (point,) = {tuple(s.params.items()) for s in load_experiment_file(write(folder, text)).experiment.runs()
                if s.params["width"] == 16 and s.replicate == 0 and s.params["lr"] == 0.001}
    assert dict(point)["lr"] == 0.001


# --------------------------------------------------------------------------- overrides


def test_overrides_from_the_command_line_win_and_params_lr_means_the_grid_axis(folder):
    loaded = load_experiment_file(write(folder, BASE), overrides=["params.lr=[0.5]", "seeds.replicates=1",
                                                                  "executor.workers=3", "name=other"])
    assert [s.params for s in loaded.experiment.runs()] == [{"lr": 0.5, "width": 16}, {"lr": 0.5, "width": 64}]
    assert loaded.experiment.experiment_id == "other-2"
    assert loaded.executor.settings == {"workers": 3} and loaded.executor.origins["workers"] == "command line: executor.workers=3"


@pytest.mark.parametrize(("override", "expected"), [
    ("executor.wrokers=2", "command line: executor.wrokers=2: unknown local executor option; did you mean 'workers'?"),
    ("seeds.replicates=none", "command line: seeds.replicates=none: must be a whole number of at least 1"),
    ("params.lr=[]", "command line: params.lr=[]: must be a non-empty list of values"),
    ("executor.gpus", "command line: 'executor.gpus': an override is key.path=value, e.g. executor.gpus=2"),
    ("params.lr=[0.1", "command line: params.lr=[0.1: cannot read '[0.1' as a value"),
])
def test_a_bad_override_is_one_line_naming_it(folder, override, expected):
    assert error_of(write(folder, BASE), overrides=[override]).startswith(expected)


# --------------------------------------------------------------------------- strict checks


@pytest.mark.parametrize(("change", "expected"), [
    (("version: 2", "verison: 2"), "exp.yaml:2: verison: unknown key; did you mean 'version'?"),
    (("seeds:\n  base: 5", "seeds:\n  bsae: 5"), "exp.yaml:9: seeds.bsae: unknown key; did you mean 'base'?"),
    (("replicates: 3", "replicates: three"), "exp.yaml:10: seeds.replicates: must be a whole number of at least 1, not a string ('three')"),
    (("name: sweep\n", ""), "exp.yaml: name: is required"),
    (("  grid:", "  gird:"), "exp.yaml:5: params.gird: unknown key; did you mean 'grid'?"),
    (("    width: [16, 64]", "    width: 16"), "exp.yaml:7: params.grid.width: must be a non-empty list of values, not a number (16)"),
    (("operation: {module}:train", "operation: train"), "exp.yaml:3: operation: must be module:function"),
    (("context:\n  dataset: synthetic", "context: [1]"), "exp.yaml:11: context: must be a mapping"),
])
def test_a_bad_key_or_value_is_one_line_with_file_line_and_key(folder, change, expected):
    path = write(folder, BASE.replace(*change))
    assert error_of(path).startswith(f"{path.parent}/{expected}")


@pytest.mark.parametrize(("distribution", "expected"), [
    ("{loguniform: [0, 1]}", "params.random.lr.loguniform: needs 0 < low < high, not [0, 1]"),
    ("{uniform: [2, 1]}", "params.random.lr.uniform: needs low < high, not [2, 1]"),
    ("{randint: [1.5, 4]}", "params.random.lr.randint: needs whole numbers low <= high"),
    ("{normal: [0, -1]}", "params.random.lr.normal: needs std > 0, not -1"),
    ("{loguniforn: [0, 1]}", "params.random.lr.loguniforn: unknown distribution; did you mean 'loguniform'?"),
    ("{uniform: [0]}", "params.random.lr.uniform: must be two numbers [low, high]"),
    ("[]", "params.random.lr: must list at least one choice"),
])
def test_a_distribution_with_bad_bounds_names_its_line(folder, distribution, expected):
    path = write(folder, f"""\
        name: r
        version: 1
        operation: {{module}}:train
        params:
          random:
            count: 3
            lr: {distribution}
        """)
    assert error_of(path).startswith(f"{path}:7: {expected}")


@pytest.mark.parametrize(("operation", "expected"), [
    ("nosuchmodule_xyz:train", "operation: no module 'nosuchmodule_xyz' in "),
    ("{module}:trian", "operation: {module} has no 'trian'; did you mean 'train'?"),
    ("{module}:NOT_A_FUNCTION", "operation: {module}:NOT_A_FUNCTION is not a function"),
])
def test_an_operation_that_cannot_be_imported_names_the_line(folder, operation, expected):
    module = (folder / "module_name").read_text()
    path = write(folder, BASE.replace("operation: {module}:train", f"operation: {operation}"))
    assert error_of(path).startswith(f"{path}:3: " + expected.replace("{module}", module))


def test_a_module_that_raises_on_import_is_named(folder):
    (folder / "broken_on_import.py").write_text("raise RuntimeError('no GPU here')\n")
    path = write(folder, BASE.replace("operation: {module}:train", "operation: broken_on_import:train"))
    assert error_of(path) == f"{path}:3: operation: importing broken_on_import raised RuntimeError: no GPU here"


@pytest.mark.parametrize(("executor", "expected"), [
    ("executor:\n  type: slurm\n  gpu: 1\n", "exp.yaml:15: executor.gpu: unknown slurm executor option; did you mean 'gpus'?"),
    ("executor:\n  type: slurm\n  time: soon\n", "exp.yaml:15: executor.time: 'soon' must be a SLURM time"),
    ("executor:\n  type: slurmm\n", "exp.yaml:14: unknown executor type 'slurmm'; did you mean 'slurm'?"),
    ("executor: 4\n", "exp.yaml:13: executor: must be a mapping"),
])
def test_executor_options_are_checked_against_the_executor_type(folder, executor, expected):
    path = write(folder, BASE + executor)
    assert error_of(path).startswith(f"{path.parent}/{expected}")


def test_yaml_syntax_errors_and_repeated_keys_name_the_line(folder):
    assert error_of(write(folder, BASE + "store: [oops\n")).startswith(f"{folder}/exp.yaml:14: invalid YAML")
    assert error_of(write(folder, BASE + "name: again\n")) == f"{folder}/exp.yaml:13: name: written twice; keep one"
    assert error_of(write(folder, "- a list\n")).startswith(f"{folder}/exp.yaml: must be a mapping of keys")
    assert error_of(folder / "missing.yaml") == f"{folder}/missing.yaml: no such experiment file"


# --------------------------------------------------------------------------- executor defaults


@pytest.fixture
def doc_project(folder):
    """The documentation's full example .metalab.toml and its local overrides."""
    shutil.copy(DOC_TOML, folder / ".metalab.toml")
    shutil.copy(DOC_LOCAL_TOML, folder / ".metalab.local.toml")
    return folder


def test_the_documented_snippet_takes_the_rest_from_the_project(doc_project):
    path = write(doc_project, BASE + 'executor:\n  type: slurm\n  gpus: 1\n  time: "4:00:00"\n\nstore: discover\n')
    plan = load_experiment_file(path).executor
    settings = {key: (value, origin) for key, value, origin in executor_settings(plan)}
    assert plan.kind == "slurm" and plan.profile == "slurm"
    assert settings["partition"] == ("gpu", ".metalab.toml [environments.slurm.executor]")
    assert settings["memory"] == ("32G", ".metalab.toml [environments.slurm.executor]")
    assert settings["modules"] == (["cuda/12.0"], ".metalab.toml [environments.slurm.executor]")
    assert settings["gpus"] == (1, f"{path}:15") and settings["time"] == ("4:00:00", f"{path}:16")
    assert settings["setup"] == (["source ~/my_setup.sh"], ".metalab.local.toml [environments.slurm.executor]")
    assert settings["user"] == ("jsmith", ".metalab.local.toml [environments.slurm]")
    assert settings["cpus"] == (1, "metalab's default")


def test_executor_from_config_inside_a_project_merges_the_profile_under_the_given_values(doc_project):
    executor = executor_from_config("slurm", {"gpus": 2, "time": "4:00:00"})
    assert (executor.config.partition, executor.config.memory, executor.config.modules) == ("gpu", "32G", ["cuda/12.0"])
    assert (executor.config.gpus, executor.config.time, executor.config.gateway) == (2, "4:00:00", "hpc.university.edu")
    resolved = metalab.resolve_executor("slurm", {"gpus": 2, "time": "4:00:00"})
    assert resolved.config == executor.config  # one path for both


def test_executor_from_config_without_a_project_uses_the_given_values_alone(folder):
    executor = executor_from_config("slurm", {"gpus": 1})
    assert (executor.config.partition, executor.config.memory, executor.config.gpus) == ("default", "4G", 1)


def test_the_active_profile_or_the_only_one_of_the_type_gives_the_defaults(folder, monkeypatch):
    (folder / ".metalab.toml").write_text(textwrap.dedent("""\
        [project]
        default_env = "a"
        [environments.a]
        type = "slurm"
        [environments.a.executor]
        partition = "pa"
        [environments.b]
        type = "slurm"
        [environments.b.executor]
        partition = "pb"
        [environments.laptop]
        type = "local"
        [environments.laptop.executor]
        workers = 3
        """))
    assert executor_from_config("slurm", {}).config.partition == "pa"
    monkeypatch.setenv("METALAB_ENV", "b")
    assert executor_from_config("slurm", {}).config.partition == "pb"
    assert executor_from_config("local", {}).max_workers == 3  # the only local profile
    monkeypatch.setenv("METALAB_ENV", "laptop")
    with pytest.raises(ConfigError, match=r"several slurm profiles \(a, b\); choose one with --env"):
        executor_from_config("slurm", {})
    path = write(folder, BASE + "env: b\nexecutor:\n  type: slurm\n")
    assert load_experiment_file(path).executor.settings["partition"] == "pb"
    assert load_experiment_file(path, env="a").executor.settings["partition"] == "pa"  # --env wins over env:
    assert load_experiment_file(write(folder, BASE + "env: laptop\n", "l.yaml")).executor.settings == {"workers": 3}
    mismatch = write(folder, BASE + "env: laptop\nexecutor:\n  type: slurm\n", "m.yaml")
    assert error_of(mismatch) == (f"{mismatch}:15: executor type 'slurm' does not match profile 'laptop', "
                                  "whose type is 'local'")
    unknown = write(folder, BASE + "env: nope\n", "u.yaml")
    assert error_of(unknown).startswith(f"{unknown}:13: {folder}/.metalab.toml: no environment profile 'nope'")
