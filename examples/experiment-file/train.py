"""The operation the experiment files here name as ``train:train``."""

import logging

import metalab

log = logging.getLogger(__name__)


@metalab.operation
def train(params, seeds, capture):
    rng = seeds.rng()
    loss = 1.0
    for step in range(params.get("steps", 20)):
        loss *= 1 - params["lr"] * rng.uniform(0.5, 1.5)
        capture.metric("loss", loss, step=step)
    capture.metric("final_loss", loss)
    capture.log(f"lr={params['lr']} width={params['width']} final loss {loss:.4f}")
