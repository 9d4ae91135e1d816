"""Errors meant for the person running the pipeline: the CLI prints them as one line, exit 2."""


class UserError(Exception):
    """A problem the user can fix: bad config, missing input, unwritable output.

    `hint` says what to do next; the CLI prints `error: <message> (<hint>)`.
    """

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(UserError):
    pass


class InputError(UserError):
    pass


class AccountingError(RuntimeError):
    """A stage lost or invented records: in != kept + rejected. A bug, never a user error."""
