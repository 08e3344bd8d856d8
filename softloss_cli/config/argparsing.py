"""The argument parser of the ``softloss`` sub-commands that parse their own arguments (eval, report)."""

from __future__ import annotations

import argparse

from softloss_cli.errors import SoftlossError

__all__ = ["command_parser"]


class _OneLineErrors(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (through the CLI), instead of usage + message
        command = self.prog.removeprefix("softloss ")
        raise SoftlossError(f"{command}: {message} ({self.prog} --help)")


def command_parser(command: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """A parser for ``softloss <command>``: a bad argument raises ``SoftlossError``
    ("<command>: <message> (softloss <command> --help)"), which the CLI prints as one line
    (exit 2); ``examples`` are listed under "examples:" in the help, verbatim."""
    return _OneLineErrors(
        prog=f"softloss {command}",
        description=description,
        epilog="examples:\n" + "".join(f"  {line}\n" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
