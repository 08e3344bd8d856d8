"""Exceptions that the CLI turns into one-line messages and a non-zero exit."""


class SoftlossError(Exception):
    """A user mistake or an unusable input: printed as one line, exit code 2."""

    exit_code = 2


class DivergedError(SoftlossError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""

    exit_code = 3


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (the last line of a DataLoader worker's
    re-raised traceback), or the exception's type name when it has no message."""
    text = str(exc).strip()
    # DataLoader workers re-raise with the worker's traceback in the message: keep its last line.
    if text.startswith("Caught ") and "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(exc).__name__
