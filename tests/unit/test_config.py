"""Config precedence (defaults < A3C_* env < CLI) and one-pass validation."""

import subprocess
import sys

import pytest

from common.config import Config, ConfigError, load_config
from services.cli import build_parser


def cli_values(*argv: str) -> dict:
    values = vars(build_parser().parse_args(["worker", *argv]))
    values.pop("command")
    return values


def test_defaults_match_the_design():
    config = load_config({})
    # DESIGN's 20-step rollouts are the classic's, for one env per gradient; with 16 envs
    # per gradient the default is 5 steps (4x the optimizer steps per frame; docs/learning.md).
    assert (config.env, config.n_steps, config.gamma, config.gae_lambda) == (
        "ALE/Breakout-v5",
        5,
        0.99,
        1.0,
    )
    assert (config.max_grad_norm, config.entropy_coef, config.value_coef) == (50.0, 0.01, 0.5)
    # DESIGN's Adam lr 1e-4 is the classic's, for one env per gradient. The default worker
    # batches 16 envs per gradient (#6) and takes lr 3e-4 with it (see the config docstring).
    assert (config.num_envs, config.lr, config.grad_dtype) == (16, 3e-4, "float16")


def test_env_vars_override_defaults_and_flags_override_env(monkeypatch):
    monkeypatch.setenv("A3C_LR", "0.003")
    monkeypatch.setenv("A3C_N_STEPS", "7")
    config = load_config(cli_values("--n-steps", "9"))
    assert config.lr == 0.003  # from the environment
    assert config.n_steps == 9  # the flag wins
    assert load_config(cli_values()).n_steps == 7


def test_boolean_flags_and_env(monkeypatch):
    monkeypatch.setenv("A3C_NORMALIZE_ADVANTAGES", "true")
    assert load_config({}).normalize_advantages is True
    assert load_config(cli_values("--no-normalize-advantages")).normalize_advantages is False


def test_every_invalid_value_is_reported_at_once(monkeypatch):
    monkeypatch.setenv("A3C_GAMMA", "1.5")
    with pytest.raises(ConfigError) as error:
        load_config(
            cli_values(
                "--n-steps", "0", "--learner", "nohost", "--grad-dtype", "float32", "--lr", "-1"
            )
        )
    text = str(error.value)
    for field in ("gamma", "n_steps", "learner", "lr"):
        assert f"  {field}:" in text


def test_unknown_env_var_typo_is_not_silently_used(monkeypatch):
    monkeypatch.setenv("A3C_N_STEPS", "not-a-number")
    with pytest.raises(ConfigError, match="n_steps"):
        load_config({})


def test_cli_exits_2_with_all_errors():
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "learner", "--port", "70000", "--lr", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "port" in result.stderr and "lr" in result.stderr


def test_to_cli_args_reproduces_the_config():
    config = Config(n_steps=5, normalize_advantages=True, eval_log=None, lr=0.002)
    again = load_config(cli_values(*config.to_cli_args()))
    assert again == config


def test_secrets_stay_out_of_public_dicts_and_child_args():
    config = Config(auth_key="hunter2")
    assert "hunter2" not in str(config.to_public_dict())
    assert "hunter2" not in " ".join(config.to_cli_args())
    assert config.shared_key() == b"hunter2"
