"""A sweep worth opening in Atlas: learning curves, a few failures, artifacts and logs.

    cd examples/atlas
    metalab services up          # PostgreSQL + Atlas on http://127.0.0.1:8002
    python sweep.py              # 180 runs into store="discover"; Atlas shows them as they land
    metalab services down        # the data stays under ./runs

Then, in Atlas: sort the runs by final_loss, filter `optimizer = adam` or `final_loss < 0.3`,
plot final_loss against lr grouped by optimizer (the error bars are the spread over seeds),
open a run for its loss curve, its `config.json`, `curve.svg` and log, and compare two runs.
"""

import json
import logging
import math

import metalab

log = logging.getLogger("tour")


@metalab.operation
def train(params, seeds, capture):
    """A toy training loop: the loss falls at a rate set by lr, too large an lr diverges."""
    rng = seeds.rng()
    lr, width, optimizer = params["lr"], params["width"], params["optimizer"]
    speed = lr * (3.0 if optimizer == "adam" else 1.0) * math.sqrt(width / 64)
    loss, curve = 2.5, []
    for step in range(40):
        loss = loss * (1 - min(speed, 0.6) * rng.uniform(0.4, 1.2)) + 0.02 * rng.random()
        if speed > 0.7 and step > 10:
            loss = loss * 3 + 0.1  # too fast: it diverges
        curve.append(loss)
        capture.metric("loss", loss, step=step)
        if step % 10 == 0:
            log.info("step %d loss %.4f", step, loss)
    if not math.isfinite(loss) or loss > 50:
        raise FloatingPointError(f"diverged at lr={lr} ({optimizer}): loss {loss:.3g}")
    capture.metric("final_loss", loss)
    capture.metric("accuracy", max(0.0, 1.0 - loss / 2.5) * (0.95 + 0.05 * rng.random()))
    capture.data("curve", [round(v, 5) for v in curve[::4]])
    capture.artifact("config.json", json.dumps(params, indent=2).encode())
    capture.artifact("curve.svg", _curve_svg(curve).encode())
    capture.log(f"done: lr={lr} width={width} optimizer={optimizer} final loss {loss:.4f}")


def _curve_svg(values):
    top = max(values) or 1.0
    points = " ".join(f"{4 * i},{100 - 95 * v / top:.1f}" for i, v in enumerate(values))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="160" height="100">'
            f'<polyline points="{points}" fill="none" stroke="#2f6feb" stroke-width="2"/></svg>')


exp = metalab.Experiment(
    name="atlas-tour",
    version="1",
    operation=train,
    params=metalab.grid(lr=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3], width=[32, 64, 128, 256, 512],
                        optimizer=["sgd", "adam"]),
    seeds=metalab.seeds(base=2024, replicates=3),
)

if __name__ == "__main__":
    results = metalab.run(exp, store="discover", executor=metalab.ProcessExecutor(2)).result()
    print(results)
