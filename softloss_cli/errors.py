"""Exceptions that the CLI turns into one-line messages and a non-zero exit."""


class SoftlossError(Exception):
    """A user mistake or an unusable input: printed as one line, exit code 2."""

    exit_code = 2


class DivergedError(SoftlossError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""

    exit_code = 3
