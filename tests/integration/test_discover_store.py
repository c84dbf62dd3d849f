"""``store="discover"``: an experiment lands in PostgreSQL and on disk while local services run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cluster_support import wait_until

pytestmark = pytest.mark.integration

SWEEP = textwrap.dedent("""
    import metalab

    @metalab.operation
    def train(params, seeds, capture):
        capture.metric("score", seeds.rng().random() * params["scale"])
        capture.log("scale", params["scale"])

    exp = metalab.Experiment(name="mvp", version="0.1", operation=train,
                             params=metalab.grid(scale=[0.1, 1.0, 10.0]), seeds=metalab.seeds(base=123, replicates=2))
    handle = metalab.run(exp, store="discover", progress=False)
    results = handle.result()
    print(handle.ran, handle.skipped, results.succeeded)
""")


def test_a_sweep_with_store_discover_lands_in_postgres_and_on_disk(project):
    assert project.run("services", "up").code == 0
    script = project.root / "sweep.py"
    script.write_text(SWEEP)
    # from a folder under file_root, as an array task on a compute node would run it
    workdir = project.root / "runs" / "work"
    workdir.mkdir(parents=True)
    env = project.environ()
    first = subprocess.run([sys.executable, str(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["6", "0", "6"]
    again = subprocess.run([sys.executable, str(script)], cwd=project.root, env=env, capture_output=True, text=True, timeout=120)
    assert again.stdout.split() == ["0", "6", "6"]  # resumed: nothing ran twice

    files = list((project.root / "runs" / "mvp-0.1" / "runs").glob("*.jsonl"))
    assert sum(len(path.read_text().splitlines()) for path in files) == 6
    # the sweep never connected: Atlas's indexer follows the files into the index, within a second
    wait_until(lambda: json.loads(project.http_get("/api/experiments")[2]), 10, "the experiment in the index")
    with project.connect() as conn:
        rows = conn.execute(
            "SELECT status, params->>'scale', (metrics->>'score')::float8 FROM metalab.runs WHERE experiment_id = %s",
            ("mvp-0.1",),
        ).fetchall()
        names = {r[0] for r in conn.execute("SELECT name FROM metalab.catalogue WHERE experiment_id = 'mvp-0.1'")}
    assert len(rows) == 6 and {r[0] for r in rows} == {"success"}
    assert sorted({r[1] for r in rows}) == ["0.1", "1.0", "10.0"]
    assert names == {"scale", "score"}
    status, _, body = project.http_get("/api/experiments")
    listed = json.loads(body)
    assert status == 200 and [(e["experiment_id"], e["runs"], e["succeeded"]) for e in listed] == [("mvp-0.1", 6, 6)]
    # and Atlas (started by `services up`) sorts them and opens one, with its files from file_root
    status, _, body = project.http_get("/api/experiments/mvp-0.1/runs?sort=score&order=desc")
    scores = [run["metrics"]["score"] for run in json.loads(body)["runs"]]
    assert status == 200 and len(scores) == 6 and scores == sorted(scores, reverse=True)
    best = json.loads(body)["runs"][0]["run_id"]
    status, _, body = project.http_get(f"/api/experiments/mvp-0.1/runs/{best}")
    assert status == 200 and json.loads(body)["metrics"]["score"] == scores[0]
    status, ctype, body = project.http_get(f"/experiments/mvp-0.1/runs/{best}")
    assert status == 200 and best in body


def test_discover_without_running_services_names_the_command_to_run(tmp_path):
    (tmp_path / ".metalab.toml").write_text('[environments.local]\ntype = "local"\nfile_root = "./runs"\n')
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode != 0 and "metalab services up" in done.stderr
