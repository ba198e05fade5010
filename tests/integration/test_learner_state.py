"""The learner's state across restarts, in process (real sockets on free loopback ports)."""

import torch

from common.config import load_config
from services.learner.learner import Learner
from services.local.process import free_port


def make_learner(tmp_path, **values):
    config = load_config({
        "env": "CartPole-v1", "port": free_port(pair=True), "metrics_port": free_port(),
        "checkpoint_dir": str(tmp_path), **values,
    })  # fmt: skip
    return Learner(config)


def close(learner):
    learner.server.close()
    learner.publisher.close()


def test_resume_restores_weights_and_adam_but_takes_this_runs_lr(tmp_path):
    first = make_learner(tmp_path, lr=1e-3)
    first.flat.values.grad.normal_()
    first.optimizer.step()
    first.version = 1
    first.checkpoint()
    weights = first.weights().copy()
    exp_avg = first.optimizer.state[first.flat.values]["exp_avg"].clone()
    close(first)

    second = make_learner(tmp_path, lr=5e-4)
    try:
        assert second.version == 1
        assert (second.weights() == weights).all()
        assert torch.equal(second.optimizer.state[second.flat.values]["exp_avg"], exp_avg)
        assert [group["lr"] for group in second.optimizer.param_groups] == [5e-4]
    finally:
        close(second)
