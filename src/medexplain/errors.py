"""The one exception type users see for bad input; the CLI turns it into a one-line message and exit code 2."""


class MedexplainError(ValueError):
    """Bad input or an impossible request, with a message that names the file or value and the problem.

    The message is a single line meant for people: ``"scan.dcm: DICOM file has no pixel data"``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
