"""How the service guards itself (ServerSettings), validated before anything is served."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hashae.errors import HashaeError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024
# Pixels an uploaded image may declare. Pillow's own cap (89.5 Mpx) let a 343 KB 9400x9400 PNG cost
# 2.5 s and 1.1 GB per request. 24 Mpx takes a 6000x4000 camera photo (72 MB as RGB, ~0.2 GB at the
# decoder's peak); JPEGs under the cap are decoded at up to 1/8 scale (libjpeg's draft), so cost less.
# The models want 28x28 or so: nothing a search needs is lost by refusing larger.
DEFAULT_MAX_UPLOAD_PIXELS = 24_000_000
# Images decoded at once; more wait up to DECODE_WAIT_SECONDS, then get 429. With the pixel cap this
# bounds decoding memory near 1 GB whatever the clients send.
DEFAULT_MAX_CONCURRENT_DECODES = 4


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
    max_upload_pixels: uploaded images declaring more pixels get 413 (before they are decoded).
    max_concurrent_decodes: uploads decoded at once; beyond it a request waits briefly, then gets 429.
    refresh_interval: seconds between looks for a newer generation.
    """

    host: str = "127.0.0.1"
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    refresh_interval: float = 1.0
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS
    max_concurrent_decodes: int = DEFAULT_MAX_CONCURRENT_DECODES

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
        if self.max_upload_pixels <= 0 or self.max_concurrent_decodes <= 0:
            raise ServeError("the upload pixel limit and the number of concurrent decodes must be positive")

    def host_names(self) -> frozenset[str]:
        """The lower-case names the Host header may carry (without port)."""
        names = {*LOOPBACK_NAMES, *(h.lower().strip("[]") for h in self.allowed_hosts)}
        if self.host not in ("0.0.0.0", "::", ""):
            names.add(self.host.lower().strip("[]"))
        else:  # bound to every interface: also the machine's own names
            import socket

            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        return frozenset(names)
