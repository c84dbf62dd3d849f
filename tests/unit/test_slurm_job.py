from __future__ import annotations

from metalab.config import SlurmServicesResources
from metalab.environments.slurm_job import job_name, parse_squeue, render_services_script, sbatch_directives, squeue_command
from metalab.tunnel import tunnel_command


def test_job_name_lets_metalab_find_its_own_job():
    assert job_name("my-project", "slurm") == "metalab-services-my-project-slurm"


def test_directives_come_from_the_services_table():
    resources = SlurmServicesResources(partition="cpu2019", time="7-00:00:00", memory="10G", cpus=2, account="lab",
                                       qos="long", constraint="skylake", sbatch_args=["--exclusive"])
    assert sbatch_directives(resources) == [
        "--partition=cpu2019", "--time=7-00:00:00", "--mem=10G", "--cpus-per-task=2", "--account=lab",
        "--qos=long", "--constraint=skylake", "--exclusive",
    ]
    assert sbatch_directives(None) == []


def test_script_runs_the_node_entry_point_and_holds_no_secret():
    resources = SlurmServicesResources(partition="cpu", modules=["postgresql/15"], setup=["source ~/env.sh"])
    script = render_services_script(project="p", environment="slurm", services_dir="/shared/runs/services",
                                    python="/opt/venv/bin/python", resources=resources)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --job-name=metalab-services-p-slurm" in lines
    assert "#SBATCH --output=/shared/runs/services/slurm-%j.log" in lines
    assert "#SBATCH --partition=cpu" in lines
    assert "module load postgresql/15" in lines and "source ~/env.sh" in lines
    assert lines[-1] == "exec /opt/venv/bin/python -m metalab.services.node /shared/runs/services"
    assert "password" not in script.lower() and "token" not in script.lower()


def test_squeue_lines_parse_into_states():
    text = "123|RUNNING|None|node7|6-23:59:01|metalab-services-p-slurm\n124|PENDING|Priority||7-00:00:00|x\nnoise\n"
    jobs = parse_squeue(text)
    assert [(j.job_id, j.state, j.reason, j.node) for j in jobs] == [("123", "RUNNING", "None", "node7"), ("124", "PENDING", "Priority", "")]
    assert squeue_command(job_ids=["1", "2"])[-2:] == ["-j", "1,2"]
    assert squeue_command(name="n")[-2:] == ["--name", "n"]


def test_tunnel_command_forwards_each_service_through_the_gateway():
    plan = {"gateway": "hpc.example.edu", "user": "me", "ssh_key": "/k/id", "forwards": [
        {"service": "postgres", "local_port": 5432, "remote_host": "10.0.0.7", "remote_port": 5432},
        {"service": "atlas", "local_port": 8000, "remote_host": "10.0.0.7", "remote_port": 41000},
    ]}
    argv = tunnel_command(plan, {"postgres": 15432, "atlas": 8000}, {})
    assert argv[:2] == ["ssh", "-N"] and "ExitOnForwardFailure=yes" in argv and "BatchMode=yes" in argv
    assert argv[argv.index("-i") + 1] == "/k/id"
    assert "127.0.0.1:15432:10.0.0.7:5432" in argv and "127.0.0.1:8000:10.0.0.7:41000" in argv
    assert argv[-1] == "me@hpc.example.edu"


def test_status_says_how_an_ended_job_ended_not_how_long_it_has_left():
    from metalab.environments.slurm_job import JobState, describe

    running = JobState("7", "RUNNING", "None", "cn1", "29:50", "metalab-services-p-slurm")
    failed = running._replace(state="FAILED", reason="NonZeroExitCode", time_left="29:41")
    cancelled = running._replace(state="CANCELLED", reason="None")
    pending = running._replace(state="PENDING", reason="Resources", node="")
    assert describe(running) == "job RUNNING on cn1, 29:50 left"
    assert describe(failed) == "job ended FAILED (NonZeroExitCode) on cn1"
    assert describe(cancelled) == "job ended CANCELLED on cn1"
    assert describe(pending) == "job PENDING (Resources) (no node yet), 29:50 left"
    assert describe(None) == "job gone (SLURM no longer knows it)"
