"""Bearer-token access with least privilege: client tokens call the embedrec service, admin tokens
also call the admin service (EmbedRecAdmin: reloads and any later admin RPC).

A server with no token at all is open (bind it to loopback or a private network). Once any token
is configured, every call but health checks (optional, for orchestrators' probes) needs one:
server reflection too, since it describes the whole API. Token files are re-read by `reload`
(on SIGHUP), so tokens rotate without a restart; tokens given inline (flag or environment) stay
for the process's life. The check is applied at the gRPC edge by the interceptor.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from pathlib import Path

from embedrec.server.errors import ConfigurationError


class Access(enum.Enum):
    """The answer to one call's credentials."""

    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"  # no token, or one this server does not know
    PERMISSION_DENIED = "permission_denied"  # a client token on an admin RPC


@dataclass(frozen=True)
class TokenSources:
    """Where tokens come from: files (re-read on reload) and inline comma-separated lists."""

    client_file: Path | None = None
    client_inline: str = ""
    admin_file: Path | None = None
    admin_inline: str = ""


class TokenPolicy:
    """Which `authorization: Bearer <token>` values may call which services."""

    def __init__(self, client_tokens: list[str], admin_tokens: list[str] | None = None) -> None:
        self._client = [token.encode() for token in client_tokens]
        self._admin = [token.encode() for token in admin_tokens or []]

    @classmethod
    def from_sources(cls, sources: TokenSources) -> TokenPolicy:
        """Read every source; neither files nor inline tokens: an open server.

        Raises ConfigurationError when a file is unreadable or lists no token.
        """
        client = _inline(sources.client_inline) + _from_file(sources.client_file, "auth tokens")
        admin = _inline(sources.admin_inline) + _from_file(sources.admin_file, "admin tokens")
        return cls(client, admin)

    @property
    def enabled(self) -> bool:
        """True when calls need a token."""
        return bool(self._client or self._admin)

    def check(self, authorization: str | None, *, admin: bool) -> Access:
        """The access an `authorization` header value grants to an admin or a regular RPC
        (constant-time comparisons). Admin tokens may also make regular calls."""
        if not self.enabled:
            return Access.ALLOWED
        offered = _bearer(authorization)
        if offered is None:
            return Access.UNAUTHENTICATED
        if _matches(offered, self._admin):
            return Access.ALLOWED
        if _matches(offered, self._client):
            return Access.PERMISSION_DENIED if admin else Access.ALLOWED
        return Access.UNAUTHENTICATED


def _bearer(authorization: str | None) -> bytes | None:
    """The token of an `authorization` value of the Bearer scheme (its name is case-insensitive,
    RFC 7235), else None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode()


def _matches(offered: bytes, tokens: list[bytes]) -> bool:
    # Compare with every token, not stopping at the first match: the time does not tell which.
    return sum(hmac.compare_digest(offered, token) for token in tokens) > 0


def _inline(text: str) -> list[str]:
    return [token.strip() for token in text.split(",") if token.strip()]


def _from_file(path: Path | None, what: str) -> list[str]:
    """Tokens in `path`, one per line (blank lines and # comments skipped); [] without a path."""
    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigurationError(f"{what} file unreadable: {error}") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise ConfigurationError(f"{what} file {path} lists no token")
    return tokens


class TokenGuard:
    """The policy in force, swapped whole by `reload` (calls read it once, so none sees a mix)."""

    def __init__(self, sources: TokenSources) -> None:
        """Read `sources`; raises ConfigurationError as TokenPolicy.from_sources."""
        self.sources = sources
        self.policy = TokenPolicy.from_sources(sources)

    def reload(self) -> TokenPolicy:
        """Re-read the token files and put the new policy in force; on ConfigurationError the
        old policy stays (a half-written file never locks everyone out). Blocking file I/O."""
        self.policy = TokenPolicy.from_sources(self.sources)
        return self.policy
