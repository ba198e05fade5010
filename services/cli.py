"""`a3c`: one program for every role, so every flag is shared and means the same everywhere.

    a3c run        learner + N workers + evaluator as local processes on 127.0.0.1
    a3c learner    the learner service
    a3c worker     a worker service
    a3c evaluator  the evaluator service
    a3c evaluate   play N games with a checkpoint under the evaluation protocol
    a3c record     a GIF of one game played by a checkpoint
    a3c plot       a run's learning curve from its eval.jsonl
    a3c export     a float16 model file (no optimizer state) from a checkpoint, for shipping

Every flag is a field of common.config.Config and can also be set as A3C_<FIELD>. Invalid
settings are all reported at once, with exit code 2, before anything starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from common.config import Config, ConfigError, add_config_flags, load_config


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

    if config.run_dir is None or config.out is None:
        print("a3c plot: usage: a3c plot RUN_DIR --out FILE.png", file=sys.stderr)
        raise SystemExit(2)
    print(plot_run(config.run_dir, config.out, config.eval_window))


def _export(config: Config) -> None:
    from common.checkpoint import export_model

    if config.checkpoint is None or config.out is None:
        print("a3c export: usage: a3c export --checkpoint PATH --out FILE.pt", file=sys.stderr)
        raise SystemExit(2)
    try:
        state = export_model(config.checkpoint, config.out)
    except ValueError as error:
        print(f"a3c export: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"{config.out}: {state.get('env')} model, version {state.get('model_version')}, "
        f"{state.get('frames')} frames, {config.out.stat().st_size:,} bytes"
    )


COMMANDS: dict[str, tuple[Callable[[Config], None], str]] = {
    "run": (_run, "train locally: learner + workers + evaluator as processes on loopback"),
    "learner": (_learner, "run the learner service"),
    "worker": (_worker, "run a worker service"),
    "evaluator": (_evaluator, "run the evaluator service"),
    "evaluate": (_evaluate, "evaluate a checkpoint: --checkpoint PATH --episodes N --out FILE"),
    "record": (_record, "record a GIF of one game: --checkpoint PATH --out FILE.gif"),
    "plot": (_plot, "plot a run's learning curve: RUN_DIR --out FILE.png"),
    "export": (_export, "float16 model file for shipping: --checkpoint PATH --out FILE.pt"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="a3c", description="Distributed A3C (LSTM actor-critic) over ZeroMQ."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_config_flags(sub)
        if name == "plot":
            sub.add_argument("run_dir", nargs="?", default=argparse.SUPPRESS, metavar="RUN_DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        config = load_config(args)
    except ConfigError as error:
        print(f"a3c {command}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    COMMANDS[command][0](config)


if __name__ == "__main__":
    main()
