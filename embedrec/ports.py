"""Free ports, for whatever starts servers on this host (the worker supervisor, `embedrec tune`,
the benchmarks, the tests). Dependency-free."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (IPv6 when `host` has a colon); another process may take it
    before it is bound again, so bind it soon."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
