"""What the HTTP providers share about errors: the code for a status, and keeping keys out.

A provider's error message may quote the request, the key included (a 401 often does), so
every message is passed through `redact` with the key the provider holds before it is shown.
"""

from __future__ import annotations


def status_error(status: int) -> tuple[str, bool]:
    """The TurnFailed code for an HTTP status, and whether trying again may help."""
    if status == 429:
        return "PROVIDER_RATE_LIMITED", True
    if status in (401, 403):
        return "PROVIDER_AUTH", False
    # Anthropic's 529 ("overloaded") is covered by >= 500.
    if status == 408 or status >= 500:
        return "PROVIDER_UNAVAILABLE", True
    if 400 <= status < 500:
        return "PROVIDER_BAD_REQUEST", False
    return "PROVIDER_ERROR", False


def redact(text: str, secret: str) -> str:
    """text with every occurrence of secret masked."""
    return text.replace(secret, "[redacted]") if secret else text
