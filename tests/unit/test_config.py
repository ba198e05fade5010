"""Config precedence (defaults < A3C_* env < CLI) and one-pass validation."""

import subprocess
import sys

import pytest

from common.config import COMMAND_FIELDS, Config, ConfigError, load_config
from services.cli import parse_command_line


def cli_values(*argv: str, command: str = "worker") -> dict:
    parsed, values = parse_command_line([command, *argv])
    assert parsed == command
    return values


def test_defaults_are_the_classic_a3c_scaled_to_16_envs_per_gradient():
    config = load_config({})
    # The classic's 20-step rollouts are for one env per gradient; with 16 envs per
    # gradient the default is 5 steps (4x the optimizer steps per frame; docs/learning.md).
    assert (config.env, config.n_steps, config.gamma, config.gae_lambda) == (
        "ALE/Breakout-v5",
        5,
        0.99,
        1.0,
    )
    assert (config.max_grad_norm, config.entropy_coef, config.value_coef) == (50.0, 0.01, 0.5)
    # The classic's Adam lr 1e-4 is for one env per gradient. The default worker batches 16
    # envs per gradient and takes lr 3e-4 with it (see the config docstring).
    assert (config.num_envs, config.lr, config.grad_dtype) == (4, 3e-4, "float16")


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
    monkeypatch.setenv("A3C_LR", "-1")  # not a worker flag, but every command reads A3C_*
    with pytest.raises(ConfigError) as error:
        load_config(cli_values("--n-steps", "0", "--learner", "nohost", "--grad-dtype", "float32"))
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


@pytest.mark.parametrize("command", ["learner", "worker", "evaluator", "run"])
def test_to_cli_args_reproduce_the_commands_fields(command):
    config = Config(
        n_steps=7, normalize_advantages=True, normalize_rewards=False, lr=0.002, port=6000
    )
    again = load_config(cli_values(*config.to_cli_args(command), command=command))
    for name in COMMAND_FIELDS[command]:
        assert getattr(again, name) == getattr(config, name), name


def test_to_cli_args_leave_out_what_the_command_does_not_read():
    args = Config().to_cli_args("worker", port=6000, learner="host:6000")
    assert "--port" not in args and args[args.index("--learner") + 1] == "host:6000"
    with pytest.raises(ValueError, match="not settings"):
        Config().to_cli_args("worker", no_such_setting=1)


def test_secrets_stay_out_of_public_dicts_and_child_args():
    config = Config(auth_key="hunter2")
    assert "hunter2" not in str(config.to_public_dict())
    for command in ("learner", "worker", "evaluator", "run"):
        assert "hunter2" not in " ".join(config.to_cli_args(command))
    assert config.shared_key() == b"hunter2"
