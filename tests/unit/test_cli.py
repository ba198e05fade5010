"""`a3c`: each command takes only its own flags, the parser enforces required arguments, and
A3CErrors become a message and an exit code in one place."""

import subprocess
import sys
from dataclasses import replace

import pytest

from common.config import COMMAND_FIELDS, Config, ConfigError, load_config
from common.errors import A3CError, UsageError
from services.cli import COMMANDS, main, parse_command_line


def exit_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    code = stopped.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["learner", "--episodes", "5"], "--episodes"),
        (["learner", "--target-score", "3"], "--target-score"),
        (["worker", "--port", "6000"], "--port"),
        (["worker", "--checkpoint-dir", "x"], "--checkpoint-dir"),
        (["evaluator", "--lr", "0.1"], "--lr"),
        (["run", "--port", "6000"], "--port"),  # a3c run picks its own ports
        (["run", "--eval-log", "x.jsonl"], "--eval-log"),  # and its run directory's paths
        (["evaluate", "--checkpoint", "m.pt", "--workers", "2"], "--workers"),
        (["record", "--checkpoint", "m.pt", "--out", "g.gif", "--episodes", "3"], "--episodes"),
        (["plot", "runs/x", "--out", "c.png", "--seed", "1"], "--seed"),
        (["export", "--checkpoint", "m.pt", "--out", "m16.pt", "--env", "X"], "--env"),
    ],
)
def test_a_flag_the_command_does_not_use_is_an_error_naming_it(argv, flag, capsys):
    code, err = exit_of(argv, capsys)
    assert code == 2
    assert f"a3c {argv[0]}: error: unrecognized arguments: {flag}" in err


def test_an_unused_flag_exits_2_from_the_installed_program():
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "learner", "--episodes", "5", "--target-score", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --episodes 5 --target-score 3" in result.stderr


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["evaluate"], "--checkpoint"),
        (["evaluate", "--episodes", "3"], "--checkpoint"),
        (["export", "--checkpoint", "m.pt"], "--out"),
        (["export", "--out", "m16.pt"], "--checkpoint"),
        (["record", "--checkpoint", "m.pt"], "--out"),
        (["record", "--out", "g.gif"], "--checkpoint"),
        (["plot", "runs/x"], "--out"),
        (["plot", "--out", "c.png"], "RUN-DIR"),
        ([], "{run,learner"),
    ],
)
def test_required_arguments_are_the_parsers_job(argv, missing, capsys, monkeypatch):
    ran = []
    for name, command in COMMANDS.items():
        monkeypatch.setitem(COMMANDS, name, replace(command, run=ran.append))
    code, err = exit_of(argv, capsys)
    assert code == 2 and not ran
    assert err.startswith("usage: a3c")  # argparse's own report, before anything runs
    assert "the following arguments are required: " + missing in err


def test_flags_a_command_reads_are_accepted():
    assert parse_command_line(["plot", "runs/x", "--out", "c.png", "--eval-window", "5"]) == (
        "plot",
        {"run_dir": "runs/x", "out": "c.png", "eval_window": "5"},
    )
    command, values = parse_command_line(["run", "--no-run-evaluator", "--max-frames", "9"])
    assert command == "run" and values == {"run_evaluator": False, "max_frames": "9"}


def test_defaults_then_env_then_flags_for_the_command_that_reads_them(monkeypatch):
    monkeypatch.setenv("A3C_N_STEPS", "7")
    monkeypatch.setenv("A3C_EPISODES", "3")  # not a worker flag; one ConfigMap serves all
    assert load_config(parse_command_line(["worker"])[1]).n_steps == 7
    config = load_config(parse_command_line(["worker", "--n-steps", "9"])[1])
    assert (config.n_steps, config.episodes, config.lr) == (9, 3, Config().lr)


def test_main_hands_the_command_its_config(monkeypatch):
    seen: list[Config] = []
    monkeypatch.setitem(COMMANDS, "worker", replace(COMMANDS["worker"], run=seen.append))
    monkeypatch.setenv("A3C_SEED", "4")
    main(["worker", "--num-envs", "2"])
    assert (seen[0].num_envs, seen[0].seed) == (2, 4)


def all_subclasses(cls: type) -> list[type]:
    return [cls] + [s for sub in cls.__subclasses__() for s in all_subclasses(sub)]


@pytest.mark.parametrize("error_type", all_subclasses(A3CError), ids=lambda t: t.__name__)
def test_every_a3c_error_becomes_its_exit_code_and_a_message(error_type, capsys, monkeypatch):
    error = error_type.__new__(error_type)
    Exception.__init__(error, "it went wrong")

    def fail(_config: Config) -> None:
        raise error

    monkeypatch.setitem(COMMANDS, "export", replace(COMMANDS["export"], run=fail))
    code, err = exit_of(["export", "--checkpoint", "m.pt", "--out", "m16.pt"], capsys)
    assert code == error_type.exit_code
    assert err == f"a3c export: {error}\n"


def test_exit_codes_of_the_error_kinds():
    assert (A3CError.exit_code, UsageError.exit_code, ConfigError.exit_code) == (1, 2, 2)


def test_other_exceptions_are_not_swallowed(monkeypatch):
    def crash(_config: Config) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(COMMANDS, "worker", replace(COMMANDS["worker"], run=crash))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["worker"])


def test_every_setting_is_some_commands_flag():
    used = {name for fields in COMMAND_FIELDS.values() for name in fields}
    assert used == set(Config.model_fields)
    assert set(COMMAND_FIELDS) == set(COMMANDS)


def test_the_launchers_children_take_the_flags_it_gives_them(tmp_path):
    from services.local.launcher import LocalCluster

    cluster = LocalCluster(Config(run_dir=tmp_path, workers=2, auth_key="k", seed=3))
    assert [c.name for c in cluster.children] == ["learner", "worker-0", "worker-1", "evaluator"]
    for child in cluster.children:
        role = child.args[0].removeprefix("services.")
        _, values = parse_command_line([role, *child.args[1:]])
        config = load_config(values)
        assert config.metrics_port == child.metrics_port and config.auth_key is None
        assert config.seed == 3 or "seed" not in COMMAND_FIELDS[role]
