"""Keeps secrets out of everything that leaves the process (notifications, DLQ reasons, logs).

API error text is untrusted: a proxy or API that echoes the request can put the `Authorization`
header, the key itself or a webhook secret into a message the pipeline would otherwise publish.
"""

from __future__ import annotations

import re
import threading
from typing import Any

MASK = "[redacted]"
#: Credentials in common shapes, whatever their value: header echoes, bearer tokens, secrets.
_PATTERNS = (
    re.compile(r"(?i)(authorization\s*[:=]\s*)(\"?)[^\s\"',;}]+(?:\s+[^\s\"',;}]+)?"),
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]{6,}"),
    re.compile(r"(?i)((?:api[_-]?key|secret|token|password)\"?\s*[:=]\s*\"?)[^\s\"',;}]{6,}"),
)
#: Secrets shorter than this are not masked by value: masking "a" would mangle every text.
MIN_SECRET_CHARS = 8

_known: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remembers a secret value (API key, webhook secret) so it is masked wherever it appears."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _known.add(value)
            if value.startswith("whsec_"):
                _known.add(value.removeprefix("whsec_"))


def forget_secrets() -> None:
    """Test seam: drops every registered value."""
    with _lock:
        _known.clear()


def redact(text: str) -> str:
    """`text` with every registered secret and every credential-shaped substring masked."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        else:
            text = pattern.sub(MASK, text)
    return text


def redact_tree(value: Any) -> Any:
    """A copy of a JSON-like value with every string (keys included) passed through `redact`.

    Redacting the encoded JSON text instead could cut through an escape sequence and leave
    invalid JSON; redacting each string keeps the document well-formed.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(key)): redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value
