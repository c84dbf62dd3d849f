"""``metalab run|results|status|cancel FILE`` as a researcher types them (the installed command)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SWEEP = """\
name: cli-sweep
version: 1
operation: cli_train:train
params:
  grid:
    lr: [0.1, 0.01]
    width: [16, 64]
seeds:
  replicates: 2
"""

TRAIN = '''
import metalab

@metalab.operation
def train(params, seeds, capture):
    if params["lr"] > 1:
        raise ValueError("lr too large to train")
    capture.metric("loss", params["lr"] * params["width"])
'''


@pytest.fixture
def sweep(tmp_path) -> Path:
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "cli_train.py").write_text(TRAIN)
    (folder / "sweep.yaml").write_text(SWEEP)
    return folder / "sweep.yaml"


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts)


def test_run_from_anywhere_then_results_status_and_a_rerun_that_has_nothing_to_do(metalab, sweep, tmp_path):
    done = metalab("run", str(sweep), cwd=tmp_path)
    assert done.code == 0, done
    assert "runs: 8 total, 0 already done, 8 to run" in done.err
    assert done.out.strip().endswith(f"cli-sweep-1: 8 runs recorded, 8 succeeded, 0 failed; see `metalab results {sweep}`")
    assert (sweep.parent / "experiments" / "cli-sweep-1").is_dir()  # the file's folder, not the cwd
    assert not (tmp_path / "experiments").exists()

    table = metalab("results", str(sweep), cwd=sweep.parent)
    assert table.code == 0 and table.out.splitlines()[0].split() == ["run_id", "replicate", "status", "lr", "width", "loss"]
    assert len(table.out.splitlines()) == 2 + 8
    rows = list(csv.DictReader(io.StringIO(metalab("results", str(sweep), "--csv").out)))
    assert sorted((float(r["lr"]), int(r["width"]), float(r["loss"])) for r in rows) == sorted(
        (lr, w, lr * w) for lr in (0.1, 0.01) for w in (16, 64) for _ in range(2))
    as_json = json.loads(metalab("results", str(sweep), "--json").out)
    assert {r["run_id"] for r in as_json} == {r["run_id"] for r in rows} and len(as_json) == 8

    status = metalab("status", str(sweep))
    assert status.code == 0 and status.out.strip() == "cli-sweep-1: 8 of 8 runs recorded (0 failed)"
    assert json.loads(metalab("status", str(sweep), "--json").out) == {"experiment": "cli-sweep-1", "runs": 8,
                                                                      "recorded": 8, "failed": 0}
    again = metalab("run", str(sweep))
    assert again.code == 0 and "8 total, 8 already done, 0 to run" in again.err


def test_overrides_after_the_file_change_what_runs(metalab, sweep):
    done = metalab("run", str(sweep), "params.lr=[0.5]", "seeds.replicates=1", "executor.workers=2")
    assert done.code == 0, done
    assert "executor: 2 worker processes" in done.err and "runs: 2 total, 0 already done, 2 to run" in done.err
    rows = json.loads(metalab("results", str(sweep), "params.lr=[0.5]", "seeds.replicates=1", "--json").out)
    assert sorted((r["lr"], r["width"]) for r in rows) == [(0.5, 16), (0.5, 64)]
    spelled = metalab("run", str(sweep), "--set", "params.lr=[0.5]", "--set", "seeds.replicates=1")
    assert spelled.code == 0 and "2 total, 2 already done, 0 to run" in spelled.err


def test_failed_runs_end_the_command_with_exit_1_and_the_first_error(metalab, sweep):
    done = metalab("run", str(sweep), "params.lr=[0.1,5]", "seeds.replicates=1")
    assert done.code == 1, done
    assert done.err.strip().splitlines()[-1].startswith("metalab: 2 of 4 runs failed (first: run ")
    assert "ValueError: lr too large to train" in done.err
    status = metalab("status", str(sweep), "params.lr=[0.1,5]", "seeds.replicates=1")
    assert status.out.strip() == "cli-sweep-1: 4 of 4 runs recorded (2 failed)"


def test_progress_off_a_terminal_is_plain_lines(metalab, sweep):
    done = metalab("run", str(sweep))
    assert "\r" not in done.err and "\x1b" not in done.err
    assert any(line.startswith("runs: 8/8") for line in done.err.splitlines()), done.err


@pytest.mark.parametrize(("text", "expected"), [
    (SWEEP.replace("seeds:", "seedz:"), "sweep.yaml:8: seedz: unknown key; did you mean 'seeds'?"),
    (SWEEP.replace("replicates: 2", "replicates: two"), "sweep.yaml:9: seeds.replicates: must be a whole number"),
    (SWEEP.replace("cli_train:train", "cli_train:trian"), "sweep.yaml:3: operation: cli_train has no 'trian'; did you mean 'train'?"),
    (SWEEP + "executor:\n  type: slurm\n  gpu: 1\n", "sweep.yaml:12: executor.gpu: unknown slurm executor option; did you mean 'gpus'?"),
])
def test_a_bad_file_is_one_line_exit_2_and_nothing_runs_or_is_written(metalab, sweep, text, expected):
    sweep.write_text(text)
    before = files_under(sweep.parent)
    for command in ("run", "results", "status"):
        done = metalab(command, str(sweep))
        assert done.code == 2 and done.err.startswith(f"metalab: {sweep.parent}/{expected}"), done
        assert len(done.err.strip().splitlines()) == 1 and done.out == ""
    assert files_under(sweep.parent) == before


def test_a_bad_override_is_one_line_exit_2(metalab, sweep):
    done = metalab("run", str(sweep), "executor.wrokers=2")
    assert done.code == 2 and done.err.startswith("metalab: command line: executor.wrokers=2: ")
    assert "did you mean 'workers'?" in done.err and len(done.err.strip().splitlines()) == 1
    assert not (sweep.parent / "experiments").exists()


def test_dry_prints_the_documented_merge_and_changes_nothing(metalab, doc_project):
    (doc_project / "cli_train.py").write_text(TRAIN)
    snippet = textwrap.dedent("""\
        # experiment.yaml
        executor:
          type: slurm
          gpus: 1
          time: "4:00:00"

        store: discover
        """)
    (doc_project / "experiment.yaml").write_text(SWEEP + snippet)
    before = files_under(doc_project)
    dry = metalab("run", "experiment.yaml", "--dry", cwd=doc_project)
    assert dry.code == 0, dry
    settings = {line.split()[0]: line.split(None, 2)[1:] for line in dry.out.splitlines() if line.startswith("  ")}
    assert settings["partition"] == ["gpu", ".metalab.toml [environments.slurm.executor]"]
    assert settings["memory"] == ["32G", ".metalab.toml [environments.slurm.executor]"]
    assert settings["modules"] == ["cuda/12.0", ".metalab.toml [environments.slurm.executor]"]
    assert settings["gpus"] == ["1", "experiment.yaml:13"] and settings["time"] == ["4:00:00", "experiment.yaml:14"]
    assert settings["mail_user"] == ["jsmith@university.edu", ".metalab.local.toml [environments.slurm.executor]"]
    assert "runs: 8 total (4 parameter point(s) x 2 replicate(s)); the cluster counts those already done" in dry.out
    assert "store: discover" in dry.out and "executor: slurm, defaults from profile slurm" in dry.out
    overridden = metalab("--dry", "run", "experiment.yaml", "executor.gpus=2", cwd=doc_project)
    assert "gpus            2" in overridden.out and "command line: executor.gpus=2" in overridden.out
    assert files_under(doc_project) == before


def test_cancel_of_a_local_experiment_says_there_is_no_job(metalab, sweep):
    done = metalab("cancel", str(sweep))
    assert done.code == 2 and "runs inside `metalab run`; there is no job to reach" in done.err


def test_help_lists_the_experiment_commands_and_a_commands_help_works_after_its_file(metalab, sweep):
    listed = metalab("--help").out
    assert "Experiment files:\n  cancel" in listed and "  run  " in listed
    for argv in (("run", "--help"), ("run", str(sweep), "-h"), ("--help", "run")):
        shown = metalab(*argv)
        assert shown.code == 0 and "--detach" in shown.out and "--set" in shown.out, (argv, shown)


def test_experiment_run_chains_in_a_users_tasks_py(sweep, tmp_path):
    (sweep.parent / "tasks.py").write_text(textwrap.dedent("""\
        from invoke import Collection, task
        from metalab.tasks.experiment import experiment_collection

        @task
        def report(c):
            print("report after the sweep")

        ns = Collection(report)
        ns.add_collection(experiment_collection)
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METALAB_")}
    inv = Path(sys.executable).with_name("inv")
    done = subprocess.run([str(inv), "experiment.run", "sweep.yaml", "--set", "seeds.replicates=1", "report"],
                          cwd=sweep.parent, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    assert "cli-sweep-1: 4 runs recorded, 4 succeeded" in done.stdout and "report after the sweep" in done.stdout
