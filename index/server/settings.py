"""How the service guards itself (ServerSettings), validated before anything is served."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hashae.errors import HashaeError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024


class ServeError(HashaeError):
    """The server cannot start with these settings (a non-loopback host without a token, ...)."""


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name stays on this machine."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSettings:
    """How the service guards itself.

    host: the address it is bound to. Beyond loopback a token is required.
    token: when set, every request but /api/health needs `Authorization: Bearer TOKEN` or ?token=.
    allowed_hosts: extra names accepted in the Host header besides localhost, 127.0.0.1, ::1 and
        the bound host; "*" accepts any (only with a token).
    max_upload_bytes: request bodies above this get 413.
    refresh_interval: seconds between looks for a newer generation.
    """

    host: str = "127.0.0.1"
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    refresh_interval: float = 1.0

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise ServeError(
                f"refusing to serve on {self.host} without a token: anyone who can reach it could query "
                "the store; pass --token SECRET (clients then send `Authorization: Bearer SECRET`), "
                "or bind to 127.0.0.1"
            )
        if "*" in self.allowed_hosts and not self.token:
            raise ServeError("--allow-host '*' accepts any Host header; it needs --token as well")
        if self.max_upload_bytes <= 0:
            raise ServeError(f"the upload limit must be positive, got {self.max_upload_bytes}")

    def host_names(self) -> frozenset[str]:
        """The lower-case names the Host header may carry (without port)."""
        names = {*LOOPBACK_NAMES, *(h.lower().strip("[]") for h in self.allowed_hosts)}
        if self.host not in ("0.0.0.0", "::", ""):
            names.add(self.host.lower().strip("[]"))
        else:  # bound to every interface: also the machine's own names
            import socket

            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        return frozenset(names)
