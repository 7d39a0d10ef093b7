"""`hashae serve --store .hashae`: the retrieval service and its web page (see index/server/)."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from hashae.cli.common import StoreOption, fail, handle_errors, store_path


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@handle_errors
def serve(
    store: Path = StoreOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Beyond loopback a --token is required."),
    port: int = typer.Option(8000, "--port", "-p", help="Port (0 picks a free one; the line printed at start names it).", min=0, max=65535),
    token: str = typer.Option(None, "--token", envvar="HASHAE_TOKEN", help="Require `Authorization: Bearer TOKEN` (or ?token=TOKEN) on every request. Also read from $HASHAE_TOKEN.", show_default=False),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another name the Host header may carry (repeatable; '*' for any, with --token). localhost, 127.0.0.1, ::1 and --host are always accepted."),
    max_upload_mb: float = typer.Option(16.0, "--max-upload-mb", help="Largest request body; bigger ones get 413.", min=0.001),
    refresh: float = typer.Option(1.0, "--refresh", help="Seconds between looks for a newer generation written by `hashae index`.", min=0.05),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Serve the store over HTTP: a JSON API and a web page to search it by image or by item."""
    import uvicorn

    from hashae.index.backends import open_store
    from hashae.index.server import ServerSettings, create_app, is_loopback

    settings = ServerSettings(
        host=host,
        token=token or None,
        allowed_hosts=tuple(allow_host),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        refresh_interval=refresh,
    )
    opened = open_store(store_path(store))
    try:
        app = create_app(opened, settings)
        sock = _listen(host, port)
        bound_port = sock.getsockname()[1]
        served = app.state.holder.served
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound_port}/"
        typer.echo(
            f"serving {store_path(store)} (generation {served.gen}, {len(served.ids)} items) at {url}"
            + ("  (token required)" if settings.token else ""),
        )
        if not is_loopback(host):
            names = "any" if "*" in settings.allowed_hosts else ", ".join(sorted(settings.host_names()))
            typer.echo(f"Host names accepted: {names} (add others with --allow-host NAME)")
        config = uvicorn.Config(
            app,
            log_level="info" if access_log else "warning",
            access_log=access_log,
            timeout_graceful_shutdown=3,
            server_header=False,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        opened.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (bound here, so --port 0 can name the port it got)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a keep-alive client waits ~40 ms per response (Nagle against delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        raise fail(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
