"""The one exception type users see for bad input; the CLI turns it into a one-line message and exit code 2."""

from __future__ import annotations


class MedexplainError(ValueError):
    """Bad input or an impossible request, with a message that names the file or value and the problem.

    The message is a single line meant for people: ``"scan.dcm: DICOM file has no pixel data"``. When the problem
    lies in one argument of the call, ``parameter`` names it and the message quotes it in backticks where it
    speaks of it (``MedexplainError("`batch_size` must be positive, got 0", parameter="batch_size")``); the
    command line shows the flag that sets it instead (a double dash, then the name with hyphens).
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.parameter = parameter
