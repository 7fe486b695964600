"""The one user-facing error type: a message that names the problem and the fix."""


class CharRNNError(Exception):
    """An error the user can act on. The CLI prints `message` as one stderr line and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
