"""Signs the pipeline's own SQS message attributes so an outside sender cannot forge them.

Anyone allowed to send to the job queue can set any message attribute. The attributes the
pipeline itself writes (a prompt-file line's origin, the job id a parked message was parked
under) change how a message is treated, so each carries an HMAC over the attribute values and
the body, keyed from a secret only the pipeline holds (derived from the WaveSpeed API key the
submit function already reads). An unsigned or badly signed internal attribute is ignored: the
message is then an outside message like any other, never trusted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

#: The attribute carrying the signature of the internal attributes below.
SIGNATURE_ATTRIBUTE = "kp-signature"
#: Derivation label: the API key itself is never used as an HMAC key for anything else.
_LABEL = b"kling-pipeline/message-attributes/v1"


class AttributeSigner:
    """HMAC-SHA256 over (body digest, internal attribute names and values)."""

    def __init__(self, secret: Callable[[], str]) -> None:
        self._secret = secret

    def _key(self) -> bytes | None:
        try:
            secret = self._secret()
        except Exception:  # noqa: BLE001 - no key: nothing verifies, nothing is trusted
            return None
        if not secret:
            return None
        return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()

    @staticmethod
    def _payload(body: str, internal: Mapping[str, str]) -> bytes:
        digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
        parts = [digest, *(f"{name}={internal[name]}" for name in sorted(internal))]
        return "\n".join(parts).encode("utf-8", "surrogatepass")

    def sign(self, body: str, internal: Mapping[str, str]) -> dict[str, str]:
        """`internal` plus its signature, ready to send; nothing internal when no key."""
        key = self._key()
        if key is None or not internal:
            return {}
        mac = hmac.new(key, self._payload(body, internal), hashlib.sha256).hexdigest()
        return {**internal, SIGNATURE_ATTRIBUTE: mac}

    def verified(
        self, body: str, attributes: Mapping[str, str], names: tuple[str, ...]
    ) -> dict[str, str]:
        """The internal attributes among `names` when their signature holds, else none."""
        internal = {name: attributes[name] for name in names if name in attributes}
        signature = attributes.get(SIGNATURE_ATTRIBUTE)
        if not internal or not signature:
            return {}
        key = self._key()
        if key is None:
            return {}
        expected = hmac.new(key, self._payload(body, internal), hashlib.sha256).hexdigest()
        return internal if hmac.compare_digest(expected, signature) else {}
