"""Why a report, an update or a key was refused: each an InputError the edges translate.

The HTTP edge (`siaga.api.context.STATUS_OF`) answers each with its status: the message
always names what to fix, because an app's developer reads it.
"""

from __future__ import annotations

from siaga_core.errors import InputError


class ReportRefused(InputError):
    """A report or update that cannot be taken as sent (HTTP 400)."""


class UnknownReport(InputError):
    """No such report, category or update (HTTP 404)."""


class KeyRefused(InputError):
    """A missing, unknown or revoked API key (HTTP 403)."""


class PhotoTooLarge(InputError):
    """A photo over the configured size (HTTP 413)."""


class TooManyReports(InputError):
    """A key over its rate limit (HTTP 429); `retry_after_s` goes into Retry-After."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
