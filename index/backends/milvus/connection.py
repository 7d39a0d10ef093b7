"""Connecting to Milvus: a Milvus Lite file or a Milvus server, through one pymilvus MilvusClient.

pymilvus (and milvus-lite, for .db files) are an optional extra: `pip install hashae[milvus]`.
Importing this module does not import them; connect() does, and says how to install them.

A URI ending in .db is a Milvus Lite file: hashae runs milvus-lite's server binary for it
(LiteServer), one per file and per process (a second process is refused while the first holds the
file). The server stops when its owner releases it or dies (it polls a lock the owner holds), so
a killed writer leaves no server behind; the next owner waits for that server to go before it takes
the lock, or the old server would see the lock held and stay, two servers on one file. Its glog files and output go to a `milvus-logs` folder
beside the .db file (not /tmp, not the terminal), errors only. Any other URI (http://host:19530, https://...) is a Milvus server; its
token comes from the caller or the HASHAE_MILVUS_TOKEN environment variable and is never stored.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hashae.index.backends.base import StoreError

TOKEN_ENV = "HASHAE_MILVUS_TOKEN"
LITE_SUFFIX = ".db"
LITE_LOG_DIR = "milvus-logs"
INSTALL_HINT = "install the Milvus extra: pip install 'hashae[milvus]'"
# glog settings of the Milvus Lite subprocess (read from its environment when it starts)
LITE_GLOG = {"GLOG_minloglevel": "2", "GLOG_stderrthreshold": "3"}
LITE_LOG_LEVEL = "ERROR"
LITE_OUTPUT_FILE = "server-output.log"
LITE_NAME = re.compile(r"^[a-zA-Z0-9.\-_]{1,36}$")  # what the Lite server accepts as a file name
LITE_START_TIMEOUT_S = 60.0
LITE_CONNECT_TIMEOUT_S = 30.0  # a started server's first connections, retried (see _lite_client)
LITE_CONNECT_RETRY_S = 0.25
LITE_STOP_TIMEOUT_S = 5.0
LITE_POLL_S = 0.01
LITE_LOCK_WAIT_S = 3.0
LITE_LOCK_POLL_S = 0.02
SOCKET_DIR_PREFIX = "hashae-milvus-"  # + owner pid + "-" + random: the Lite server's socket folder

_lock = threading.Lock()
_lite_servers: dict[Path, list] = {}  # Milvus Lite file -> [its LiteServer, connections using it]


def is_lite_uri(uri: str) -> bool:
    """True for a Milvus Lite file (a path ending in .db), False for a server URI."""
    return uri.endswith(LITE_SUFFIX) and "://" not in uri


def import_pymilvus() -> Any:
    """The pymilvus module, imported quietly; StoreError saying how to install it when missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus-lite 2.5.1 imports the deprecated pkg_resources
            import pymilvus
    except ImportError as err:
        raise StoreError(f"the Milvus backend needs pymilvus ({err}); {INSTALL_HINT}") from None
    # pymilvus logs every failed call with a traceback on its own console handler; hashae raises a
    # StoreError with the message instead.
    for name in ("pymilvus", "pymilvus.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return pymilvus


class MilvusConnection:
    """One MilvusClient to a Lite file or a server; close() stops a Lite file's server once no
    connection of this process uses it."""

    def __init__(self, uri: str, *, token: str | None = None, timeout: float | None = None):
        self.uri = uri
        self.lite_file = Path(uri).resolve() if is_lite_uri(uri) else None
        pymilvus = import_pymilvus()
        if self.lite_file is not None:
            server = _acquire_lite_server(self.lite_file)
            try:
                self.client = _lite_client(pymilvus, server.uri, self.lite_file, timeout=timeout)
            except BaseException:
                _release_lite_server(self.lite_file)
                raise
        else:
            token = token if token is not None else os.environ.get(TOKEN_ENV, "")
            with milvus_errors(f"connect to the Milvus server at {uri}"):
                self.client = pymilvus.MilvusClient(uri=uri, token=token, timeout=timeout)
        self._closed = False

    def close(self) -> None:
        """Close the client; the last user of a Lite file in this process stops its server."""
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        except Exception:
            pass  # closing a client whose server is gone is not an error
        if self.lite_file is not None:
            _release_lite_server(self.lite_file)


class LiteServer:
    """The Milvus Lite server of one .db file, run by this process.

    milvus-lite's own launcher (what pymilvus uses for a .db URI) sleeps a fixed 0.5 s to see the
    server start; this one waits for the server's socket instead, and keeps its logs beside the file.
    The protocol is milvus-lite 2.5.1's: `milvus DB_FILE unix:SOCKET LOG_LEVEL LOCK_FILE`, where the
    server runs while its owner holds a lockf lock on LOCK_FILE, so it stops when the owner releases
    the lock or dies, and a second owner (another process) is refused.
    """

    def __init__(self, db_file: Path):
        self.db_file = db_file
        if not LITE_NAME.match(db_file.name):
            raise StoreError(f"Milvus Lite file names are at most 36 letters, digits, '.', '-', '_': {db_file.name!r}")
        self.lock_file = lite_lock_file(db_file)
        _remove_sockets_of_dead_processes()
        self.socket_dir = Path(tempfile.mkdtemp(prefix=f"{SOCKET_DIR_PREFIX}{os.getpid()}-"))
        self.socket = self.socket_dir / "lite.sock"
        self.uri = f"unix:{self.socket}"
        self._lock_handle = None
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        binary_dir = Path(_milvus_lite_binaries())
        self._lock_handle = open(self.lock_file, "a")
        try:
            self._take_lock()
        except BaseException:
            self._lock_handle.close()
            self._lock_handle = None  # the lock file stays (another owner's, or the next one's)
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            raise
        log_dir = self.db_file.parent / LITE_LOG_DIR
        log_dir.mkdir(exist_ok=True)
        environment = {**LITE_GLOG, "GLOG_log_dir": str(log_dir), **os.environ}  # the user's settings win
        environment["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(binary_dir), os.environ.get("LD_LIBRARY_PATH")]))
        environment["DYLD_LIBRARY_PATH"] = environment["LD_LIBRARY_PATH"]
        with open(log_dir / LITE_OUTPUT_FILE, "ab") as output:
            self._process = subprocess.Popen(
                [str(binary_dir / "milvus"), str(self.db_file), self.uri, LITE_LOG_LEVEL, str(self.lock_file)],
                env=environment, cwd=str(self.db_file.parent), stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            )
        self._wait_for_socket()

    def _take_lock(self) -> None:
        """Lock the lock file, once no server of a killed owner is left on the file.

        Such a server exits when it finds the lock free; taking the lock first would keep it
        running beside ours, so while one is seen (Linux: /proc) the lock is only tried and given
        back. A lock someone else keeps holding for LITE_LOCK_WAIT_S is a live owner: StoreError.
        """
        deadline = time.monotonic() + LITE_START_TIMEOUT_S
        held_by_other_since = None
        while True:
            if self._try_lock():
                if not _servers_of(self.db_file):
                    return
                fcntl.lockf(self._lock_handle, fcntl.LOCK_UN)  # an ownerless server: let it see the lock free
                held_by_other_since = None
            else:
                held_by_other_since = held_by_other_since or time.monotonic()
                if time.monotonic() - held_by_other_since > LITE_LOCK_WAIT_S:
                    raise StoreError(
                        f"the Milvus Lite file {self.db_file} is open in another process (Milvus Lite serves one "
                        "process per file): stop the other hashae process using this store, or use a Milvus "
                        "server (--uri http://HOST:19530)"
                    )
            if time.monotonic() > deadline:
                pids = _servers_of(self.db_file)
                raise StoreError(f"a Milvus Lite server (pid {pids[0] if pids else '?'}) of {self.db_file} did not exit; stop it")
            time.sleep(LITE_LOCK_POLL_S)

    def _try_lock(self) -> bool:
        try:
            fcntl.lockf(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _wait_for_socket(self) -> None:
        deadline = time.monotonic() + LITE_START_TIMEOUT_S
        while not self.socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                code = self._process.poll()
                self.stop()
                why = f"exited with status {code}" if code is not None else f"did not start within {LITE_START_TIMEOUT_S:.0f} s"
                raise StoreError(f"the Milvus Lite server of {self.db_file} {why}; see {self.db_file.parent / LITE_LOG_DIR}")
            time.sleep(LITE_POLL_S)

    def stop(self) -> None:
        """Release the lock (the server then exits by itself), wait for it, clean up."""
        if self._lock_handle is not None:
            try:
                fcntl.lockf(self._lock_handle, fcntl.LOCK_UN)
            except OSError:
                pass
            self._lock_handle.close()  # the file stays: unlinking it could let two owners lock two files
            self._lock_handle = None
        if self._process is not None:
            try:
                self._process.wait(timeout=LITE_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def _lite_client(pymilvus: Any, server_uri: str, lite_file: Path, *, timeout: float | None) -> Any:
    """A client of a Lite server that has just started. Its socket appears before it answers, and on
    a loaded machine the first connection can be refused: try again until LITE_CONNECT_TIMEOUT_S."""
    deadline = time.monotonic() + LITE_CONNECT_TIMEOUT_S
    while True:
        try:
            with milvus_errors(f"connect to the Milvus Lite server of {lite_file}"):
                return pymilvus.MilvusClient(uri=server_uri, timeout=timeout)
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(LITE_CONNECT_RETRY_S)


def lite_lock_file(db_file: Path) -> Path:
    """The lock file a Lite server's owner holds (milvus-lite's own name for it: the two exclude each other)."""
    return db_file.parent / f".{db_file.name}.lock"


def _servers_of(db_file: Path) -> list[int]:
    """Pids of running Milvus Lite servers of db_file (their command line names it), from /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = entry.read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if len(arguments) > 1 and arguments[0].endswith(b"/milvus") and arguments[1] == os.fsencode(db_file):
            found.append(int(entry.parent.name))
    return found


def _remove_sockets_of_dead_processes() -> None:
    """Remove the socket folders that killed processes left in the temporary folder (the name
    holds the owner's pid; a folder of a live process is never touched)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SOCKET_DIR_PREFIX}*-*"):
        pid = folder.name[len(SOCKET_DIR_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _milvus_lite_binaries() -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus-lite 2.5.1 imports the deprecated pkg_resources
            from milvus_lite.server import BIN_PATH
    except ImportError as err:
        raise StoreError(f"a Milvus Lite file needs milvus-lite ({err}); {INSTALL_HINT}") from None
    return BIN_PATH


def _acquire_lite_server(lite_file: Path) -> LiteServer:
    if not lite_file.parent.is_dir():
        raise StoreError(f"the folder of the Milvus Lite file {lite_file} does not exist")
    with _lock:
        entry = _lite_servers.get(lite_file)
        if entry is None:
            server = LiteServer(lite_file)
            server.start()
            entry = _lite_servers[lite_file] = [server, 0]
        entry[1] += 1
        return entry[0]


def _release_lite_server(lite_file: Path) -> None:
    with _lock:
        entry = _lite_servers.get(lite_file)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _lite_servers[lite_file]
            entry[0].stop()


@atexit.register
def _stop_lite_servers() -> None:
    """Stop this process's Lite servers on exit (they would stop by themselves once the lock goes)."""
    with _lock:
        servers = [entry[0] for entry in _lite_servers.values()]
        _lite_servers.clear()
    for server in servers:
        server.stop()


@contextmanager
def milvus_errors(doing: str) -> Iterator[None]:
    """Turn a pymilvus or gRPC error raised while `doing` into a one-line StoreError."""
    try:
        yield
    except StoreError:
        raise
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("pymilvus", "grpc"):
            raise
        raise StoreError(f"Milvus failed to {doing}: {_message(err)}") from None


def _message(err: Exception) -> str:
    message = getattr(err, "message", None) or str(err)
    return " ".join(str(message).split())[:300]
