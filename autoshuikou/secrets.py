"""Database passwords never leave the process: not into a file, a log or a terminal.

A ``--storage`` URL may carry a password (``postgresql://user:pw@host/db``, or
``?password=pw``). Whatever is written keeps the URL without it (:func:`strip_password`:
libpq then reads it from PGPASSWORD, ~/.pgpass or a service file); whatever is shown masks
it (:func:`redact_url`, :func:`redact_text`).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"
# Query parameters that hold secrets (libpq's names).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
# scheme://rest; the scheme as RFC 3986 spells it (postgresql+psycopg2 too). A URL given
# alone may hold anything after it (even a space); one in a text ends at a space.
_SCHEME = r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)"
_URL = re.compile(_SCHEME + r"(?P<rest>.*)", re.DOTALL)
_URL_IN_TEXT = re.compile(_SCHEME + r"(?P<rest>\S*)")


def _parts(url: str) -> tuple[str, str, str | None, str, str] | None:
    """(scheme://, user, password or None, host/path, ?query or "") of a URL, None if not one.

    The userinfo ends at the last ``@``, so a password holding a raw ``@``, ``/``, ``?`` or
    ``:`` is still all of it (never half shown); an ``@`` in the query is not expected.
    """
    match = _URL.fullmatch(url.strip())
    if match is None:
        return None
    scheme, rest = match["scheme"], match["rest"]
    user, password = "", None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, secret = userinfo.partition(":")
        password = secret if colon else None
    query_at = rest.find("?")
    if query_at < 0:
        return scheme, user, password, rest, ""
    return scheme, user, password, rest[:query_at], rest[query_at:]


def _query(query: str, mask: bool) -> str:
    """``?a=1&password=x`` with secret parameters masked (``mask``) or dropped."""
    if not query:
        return ""
    kept = []
    for item in query[1:].split("&"):
        key = item.partition("=")[0]
        if unquote(key).strip().lower() in SECRET_PARAMETERS:
            if mask:
                kept.append(f"{key}={MASK}")
            continue
        kept.append(item)
    return f"?{'&'.join(kept)}" if kept else ""


def _join(scheme: str, user: str, password: str | None, where: str, query: str) -> str:
    userinfo = user if password is None else f"{user}:{password}"
    at = "@" if user or password is not None else ""
    return f"{scheme}{userinfo}{at}{where}{query}"


def redact_url(url: str) -> str:
    """``url`` for showing: its password (in the userinfo or a ``password=`` parameter)
    replaced by ``***``. A string that is not a URL comes back unchanged."""
    parts = _parts(url)
    if parts is None:
        return url
    scheme, user, password, where, query = parts
    masked = None if password is None else MASK
    return _join(scheme, user, masked, where, _query(query, mask=True))


def strip_password(url: str) -> str:
    """``url`` for writing down: its password removed entirely, the user kept, so libpq
    takes the password from PGPASSWORD, ~/.pgpass or a service file. A string that is not
    a URL comes back unchanged."""
    parts = _parts(url)
    if parts is None:
        return url
    scheme, user, _, where, query = parts
    return _join(scheme, user, None, where, _query(query, mask=False))


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password that :func:`strip_password` would drop."""
    return strip_password(url) != url


def passwords_in(url: str) -> list[str]:
    """The secrets ``url`` holds, as written and percent-decoded (for :func:`redact_text`)."""
    parts = _parts(url)
    if parts is None:
        return []
    found = [] if parts[2] is None else [parts[2]]
    for item in parts[4][1:].split("&") if parts[4] else []:
        key, _, value = item.partition("=")
        if unquote(key).strip().lower() in SECRET_PARAMETERS:
            found.append(value)
    forms = {form for secret in found for form in (secret, unquote(secret), quote(secret, safe=""))}
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact_text(text: str, url: str | None = None) -> str:
    """``text`` (an exception's message, a log line) with every URL in it redacted and the
    passwords of ``url`` masked wherever they appear: a driver may quote them."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in passwords_in(url) if url else []:
        text = text.replace(secret, MASK)
    return text
