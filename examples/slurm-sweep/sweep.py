"""A sweep on SLURM as job arrays: the executor's resources come from .metalab.toml.

    # .metalab.toml has a slurm profile: gateway (or none on the login node), file_root, python,
    # and [environments.slurm.executor] with partition, time, memory... (see .metalab.toml here)
    metalab services up --env slurm         # optional: PostgreSQL (+ Atlas) for store="discover"
    python sweep.py                          # queues the arrays and waits for the results
    python sweep.py --detach                 # queues them and exits; later:
    python sweep.py --reconnect              # status, then waits and prints the results

Running it again submits only the runs that are not finished (a cancelled or failed task's runs).
"""

import sys

import metalab


@metalab.operation
def fit(params, seeds, capture):
    rng = seeds.rng()
    loss = 1.0
    for step in range(50):
        loss *= 1 - params["lr"] * rng.uniform(0.5, 1.5)
        capture.metric("loss", loss, step=step)
    capture.metric("final_loss", loss)
    capture.log(f"lr={params['lr']} width={params['width']} final loss {loss:.4f}")


exp = metalab.Experiment(
    name="slurm-demo",
    version="1",
    operation=fit,
    params=metalab.grid(lr=[0.001, 0.003, 0.01, 0.03, 0.1], width=[32, 64, 128, 256]),
    seeds=metalab.seeds(base=11, replicates=5),
)

if __name__ == "__main__":  # the tasks import this file for `fit`: this block must not run there
    # [environments.slurm.executor] gives the defaults; this experiment only says what differs.
    executor = metalab.resolve_executor("slurm", {"max_concurrent": 8, "time": "0:20:00"})
    store = sys.argv[2] if len(sys.argv) > 2 else "discover"
    if "--reconnect" in sys.argv:
        handle = metalab.reconnect(exp, store=store, executor=executor)
        print("status:", handle.status)
    else:
        handle = metalab.run(exp, executor=executor, store=store)
        print(f"queued {handle.ran} runs as jobs {', '.join(handle.job_ids) or '(none: all done or in flight)'}")
        if "--detach" in sys.argv:
            sys.exit(0)
    results = handle.result()
    print(results)
    print(results.table(max_rows=10))
