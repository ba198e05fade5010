"""`a3c`: one program for every role.

    a3c run        learner + N workers + evaluator as local processes on 127.0.0.1
    a3c learner    the learner service
    a3c worker     a worker service
    a3c evaluator  the evaluator service
    a3c evaluate   play N games with a checkpoint under the evaluation protocol
    a3c record     a GIF of one game played by a checkpoint
    a3c plot       a run's learning curve from its eval.jsonl
    a3c export     a float16 model file (no optimizer state) from a checkpoint, for shipping
    a3c keys       CurveZMQ certificates for the learner, the workers and the evaluator

Each command's flags are the fields of common.config.Config it reads (COMMAND_FIELDS), parsed
by pydantic-settings' CLI; every field can also be set as A3C_<FIELD>, for any command. A flag
a command does not read, or a missing required argument, is the parser's exit code 2; invalid
settings are all reported at once, with exit code 2, before anything starts. This module is
the one place where an A3CError becomes a message on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, create_model
from pydantic_settings import BaseSettings, CliPositionalArg, CliSettingsSource, CliSubCommand

from common.config import COMMAND_FIELDS, Config, load_config
from common.errors import A3CError, UsageError


def _run(config: Config) -> None:
    from services.local.launcher import run_local

    run_local(config)


def _learner(config: Config) -> None:
    from services.learner.learner import run_learner

    run_learner(config)


def _worker(config: Config) -> None:
    from services.worker.worker import run_worker

    run_worker(config)


def _evaluator(config: Config) -> None:
    from services.evaluator.evaluator import run_evaluator

    run_evaluator(config)


def _evaluate(config: Config) -> None:
    from services.evaluator.offline import evaluate_checkpoint

    evaluate_checkpoint(config)


def _record(config: Config) -> None:
    from services.evaluator.record import record_game

    record_game(config)


def _plot(config: Config) -> None:
    from services.local.plot import plot_run

    assert config.run_dir is not None and config.out is not None  # required by the parser
    print(plot_run(config.run_dir, config.out, config.eval_window))


def _export(config: Config) -> None:
    from common.checkpoint import export_model

    assert config.checkpoint is not None and config.out is not None  # required by the parser
    try:
        state = export_model(config.checkpoint, config.out)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(
        f"{config.out}: {state.get('env')} model, version {state.get('model_version')}, "
        f"{state.get('frames')} frames, {config.out.stat().st_size:,} bytes"
    )


def _keys(config: Config) -> None:
    from common.transport import create_keys

    assert config.out is not None  # required by the parser
    written = create_keys(config.out)
    for path in written:
        print(path)
    print(
        f"{len(written)} files written in {config.out} (existing keys kept). Learner: "
        f"--curve-key-file {config.out}/learner.key_secret --curve-clients-dir "
        f"{config.out}/clients; workers: --curve-key-file {config.out}/worker.key_secret "
        f"--curve-server-key-file {config.out}/learner.key; the evaluator the same with "
        "evaluator.key_secret"
    )


@dataclass(frozen=True)
class Command:
    run: Callable[[Config], None]
    help: str
    required: tuple[str, ...] = ()
    """Fields that are optional in Config (a service never needs them) but this command does."""
    positional: tuple[str, ...] = ()
    help_for: tuple[tuple[str, str], ...] = ()
    """(field, help) where Config's description (written for the services) would mislead."""


COMMANDS: dict[str, Command] = {
    "run": Command(_run, "train locally: learner + workers + evaluator as processes on loopback"),
    "learner": Command(_learner, "run the learner service"),
    "worker": Command(_worker, "run a worker service"),
    "evaluator": Command(_evaluator, "run the evaluator service"),
    "evaluate": Command(
        _evaluate,
        "evaluate a checkpoint: --checkpoint PATH --episodes N --out FILE",
        required=("checkpoint",),
    ),
    "record": Command(
        _record,
        "record a GIF of one game: --checkpoint PATH --out FILE.gif",
        required=("checkpoint", "out"),
    ),
    "plot": Command(
        _plot,
        "plot a run's learning curve: RUN-DIR --out FILE.png",
        required=("run_dir", "out"),
        positional=("run_dir",),
        help_for=(("run_dir", "the run directory `a3c run` wrote (reads its eval.jsonl)"),),
    ),
    "export": Command(
        _export,
        "float16 model file for shipping: --checkpoint PATH --out FILE.pt",
        required=("checkpoint", "out"),
    ),
    "keys": Command(
        _keys,
        "CurveZMQ certificates (learner, worker, evaluator, clients/): --out DIR",
        required=("out",),
    ),
}


def _flags_model(name: str, command: Command) -> type[BaseModel]:
    """The command's flags as a model for the parser: Config's fields (types, help), only
    the ones the command reads. It only parses; Config validates, together with the env."""
    fields: dict[str, Any] = {}
    help_for = dict(command.help_for)
    for field in COMMAND_FIELDS[name]:
        info = Config.model_fields[field]
        description = help_for.get(field, info.description)
        annotation: Any = info.annotation
        if field in command.required:
            annotation = next(a for a in annotation.__args__ if a is not type(None))
            if field in command.positional:
                annotation = CliPositionalArg[annotation]  # type: ignore[misc]
            fields[field] = (annotation, Field(description=description))
        else:
            default = info.get_default(call_default_factory=True)  # this machine's, for --help
            fields[field] = (annotation, Field(default, description=description))
    return create_model(f"{name.title()}Flags", __doc__=command.help, **fields)


def _commands_model() -> type[BaseSettings]:
    """One subcommand per command. It is only parsed into, never built, so it reads no env."""
    fields: dict[str, Any] = {}
    for name, command in COMMANDS.items():
        flags = _flags_model(name, command)
        subcommand = CliSubCommand[flags]  # type: ignore[misc,valid-type]
        fields[name] = (subcommand, Field(description=command.help))
    return create_model(
        "A3C",
        __base__=BaseSettings,
        __doc__="Distributed A3C (LSTM actor-critic) over ZeroMQ.",
        **fields,
    )


def _add_required_subparsers(parser: argparse.ArgumentParser, **kwargs: Any) -> Any:
    return parser.add_subparsers(required=True, **kwargs)


def _parse_args(
    parser: argparse.ArgumentParser,
    args: Sequence[str] | None = None,
    namespace: argparse.Namespace | None = None,
) -> argparse.Namespace:
    """parse_args, except that a flag the command does not take is reported by the command's
    own parser (`a3c learner: error: unrecognized arguments: --episodes 5`, its usage)."""
    parsed, extra = parser.parse_known_args(args, namespace)
    if extra:
        commands = next(
            action.choices
            for action in parser._actions
            if isinstance(action, argparse._SubParsersAction)
        )
        command = commands.get(getattr(parsed, ":subcommand", ""), parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return parsed


def parse_command_line(argv: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
    """(command, the flags given on the command line, unvalidated); exits 2 on a flag the
    command does not take or a missing required argument, as argparse does."""
    source: CliSettingsSource[BaseSettings] = CliSettingsSource(
        _commands_model(),
        cli_prog_name="a3c",
        cli_parse_args=list(sys.argv[1:] if argv is None else argv),
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_enforce_required=True,
        cli_hide_none_type=True,
        case_sensitive=True,
        parse_args_method=_parse_args,
        add_subparsers_method=_add_required_subparsers,
    )
    chosen = [(name, values) for name, values in source().items() if values is not None]
    assert len(chosen) == 1, chosen  # the subcommand is required
    return chosen[0]


def main(argv: Sequence[str] | None = None) -> None:
    command, values = parse_command_line(argv)
    try:
        COMMANDS[command].run(load_config(values))
    except A3CError as error:
        print(f"a3c {command}: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None


if __name__ == "__main__":
    main()
