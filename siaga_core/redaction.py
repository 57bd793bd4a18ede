"""Secrets kept out of messages: the password in a URL's userinfo."""

import re
from typing import Final

# `scheme://user:password@`: everything between the user's colon and the `@`.
_URL_PASSWORD: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@\s:'\"]*):[^/@\s'\"]*@")


def redact_userinfo(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`."""
    return _URL_PASSWORD.sub(r"\1:***@", text)
