"""The one exception a request marea cannot serve becomes: an HTTP status and a one-line body.

Its own module so that the pure checkers (`grammar`, `security`) and `wire` can all raise it without importing
each other.
"""

from __future__ import annotations


class WireError(Exception):
    """A request marea cannot serve; `status` is the HTTP code, the message is the whole response body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
