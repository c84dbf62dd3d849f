"""The quick start: six runs into a FileStore (./experiments/), no services needed.

    python examples/quickstart/sweep.py          # run it twice: the second time resumes (nothing to do)
"""

import metalab


@metalab.operation
def train(params, seeds, capture):
    rng = seeds.rng()  # random.Random; seeds.numpy() gives a numpy Generator
    capture.metric("score", rng.random() * params["scale"])


exp = metalab.Experiment(
    name="mvp",
    version="0.1",
    context={},
    operation=train,
    params=metalab.grid(scale=[0.1, 1.0, 10.0]),
    seeds=metalab.seeds(base=123, replicates=2),
)

if __name__ == "__main__":
    results = metalab.run(exp).result()
    print(results)
    print(results.table())
