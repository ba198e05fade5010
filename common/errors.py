"""The errors library code raises instead of exiting; `services.cli` alone turns an A3CError
into `a3c <command>: <message>` on stderr and the error's exit code."""

from __future__ import annotations


class A3CError(Exception):
    """Anything the program refuses to go on with; the message is meant for the user."""

    exit_code = 1


class UsageError(A3CError):
    """The command line, a setting or a file named on it cannot be used as given."""

    exit_code = 2


class CheckpointError(A3CError):
    """A checkpoint or model file this run cannot start from (unreadable or incomplete)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint for another model than this run builds: loading it would fail half-way or,
    worse, train a network on an environment it was not made for."""
