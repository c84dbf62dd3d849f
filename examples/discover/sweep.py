"""A sweep that writes to the running services: PostgreSQL indexes it, the files sit under file_root.

    cd examples/discover
    metalab services up                 # PostgreSQL (+ Atlas on http://127.0.0.1:8005)
    python sweep.py                     # store="discover" finds them through runs/services/bundle.json
    metalab services down               # the data stays
"""

import metalab


@metalab.operation
def fit(params, seeds, capture):
    rng = seeds.rng()
    loss = 1.0
    for step in range(20):
        loss *= 1 - params["lr"] * rng.uniform(0.5, 1.5)
        capture.metric("loss", loss, step=step)
    capture.metric("final_loss", loss)
    capture.log(f"lr={params['lr']} width={params['width']} final loss {loss:.4f}")


exp = metalab.Experiment(
    name="discover-demo",
    version="1",
    operation=fit,
    params=metalab.grid(lr=[0.01, 0.03, 0.1], width=[32, 64]),
    seeds=metalab.seeds(base=7, replicates=3),
)

if __name__ == "__main__":
    results = metalab.run(exp, store="discover").result()
    print(results)
    print(results.table(max_rows=10))
