"""The one exception type the CLI turns into a clear message instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unmet precondition the user can fix.

    ``message`` says what is wrong, ``hint`` how to fix it.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  how to fix: {self.hint}" if self.hint else self.message
