"""What every command shares: the one-line `error:` with exit status 2 for bad input (also for
click's own usage errors, once in the group), notes on stderr, and numbers in tables."""
from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True)


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


def note(message: str) -> None:
    err_console.print(f"[yellow]note:[/] {escape(message)}", highlight=False, soft_wrap=True)


_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())     # `blis-gym` alone prints the help


class OneLineErrors(click.Group):
    """A bad option or argument of any command (wherever it is defined), or of the group itself,
    gets one line and exit status 2, not click's usage block."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            if isinstance(e, _HELP):
                raise
            fail(e.format_message())

    def invoke(self, ctx):
        try:                            # parses the command's arguments, then runs it
            return super().invoke(ctx)
        except click.UsageError as e:
            fail(e.format_message())


def note_seed(label: str, workload) -> None:
    """Say it when the seeds asked for cannot change the requests (sim/workload/randomness.py)."""
    from ..sim.workload.randomness import seed_note
    text = seed_note(label, workload)
    if text is not None:
        note(text)


def fmt(v) -> str:
    """A figure of a table to two decimals; `-` where there is none."""
    return "-" if v is None else f"{v:.2f}"
