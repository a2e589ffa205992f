"""Bearer-token access: which `authorization` header values may call the embedrec service.

Health and reflection stay open (orchestrators probe them without credentials); the check is
applied at the gRPC edge to the embedrec RPCs only.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from embedrec.server.errors import ConfigurationError


class TokenPolicy:
    """Accepts `Bearer <token>` for any of the configured tokens; open when there are none."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [token.encode() for token in tokens]

    @classmethod
    def from_sources(cls, path: Path | None, inline: str = "") -> TokenPolicy:
        """Tokens from the file `path` (one per line; blank lines and # comments skipped) and the
        comma-separated `inline` list (e.g. an environment variable); neither: open.

        Raises ConfigurationError when the file is unreadable or lists no token.
        """
        tokens = [token.strip() for token in inline.split(",") if token.strip()]
        if path is not None:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as error:
                raise ConfigurationError(f"auth tokens file unreadable: {error}") from None
            from_file = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
            if not from_file:
                raise ConfigurationError(f"auth tokens file {path} lists no token")
            tokens += from_file
        return cls(tokens)

    @property
    def enabled(self) -> bool:
        """True when calls need a token."""
        return bool(self._tokens)

    def allows(self, authorization: str | None) -> bool:
        """Whether an `authorization` header value grants access (constant-time comparison)."""
        if not self._tokens:
            return True
        if not authorization or not authorization.startswith("Bearer "):
            return False
        offered = authorization.removeprefix("Bearer ").strip().encode()
        return any(hmac.compare_digest(offered, token) for token in self._tokens)
