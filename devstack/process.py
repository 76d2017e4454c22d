"""Small process and port helpers shared by the devstack services.

Linux-first: liveness and identity checks read ``/proc`` when it exists and fall
back to ``kill(pid, 0)`` elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from devstack.settings import DevstackError

# Children we spawned in this interpreter, by pid. Keeping the Popen objects lets
# ``pid_alive`` reap them (a dead child we never waited for stays a zombie, and a
# zombie still answers ``kill(pid, 0)``), and stops Python from warning about a
# "still running" subprocess when the object would otherwise be collected.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def require_tool(name: str, hint: str) -> str:
    """Return the full path of ``name`` on PATH or raise a one-line DevstackError.

    Args:
        name: Executable to look up, e.g. ``java``.
        hint: What the user should install, appended to the message.
    """
    path = shutil.which(name)
    if path is None:
        raise DevstackError(f"`{name}` not found on PATH; {hint}")
    return path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` cannot be bound because something else holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the JVM sets it: TIME_WAIT leftovers of a broker we just
        # stopped must not count as "taken", a live listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def read_pid(pid_file: Path) -> int | None:
    """The pid stored in ``pid_file``, or None when missing or unreadable."""
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` from /proc, or None when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a running (not zombie) process."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    # The state letter follows the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def spawn_detached(cmd: Sequence[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with stdout and stderr appended to ``log_path``.

    Its own session keeps it alive when the terminal that ran ``orderproc dev up``
    closes, and keeps Ctrl-C in that terminal from reaching it.
    """
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Poll until ``pid`` has exited, at most ``timeout_s``; True when it is gone."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(pid: int, grace_s: float) -> None:
    """SIGTERM ``pid``, wait up to ``grace_s``, then SIGKILL it if still alive."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, grace_s):
        return
    kill_now(pid)


def kill_now(pid: int) -> None:
    """SIGKILL ``pid`` and wait until it is gone (a crash, as ``kill -9`` makes one)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, 10.0):
        raise DevstackError(f"process {pid} survived SIGKILL; check it with `ps -p {pid}`")


def tail(path: Path, lines: int = 10) -> list[str]:
    """The last ``lines`` non-empty lines of a text file (empty when missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            # 64 KiB is plenty for ten log lines and keeps huge logs cheap to read.
            fh.seek(max(0, size - 65536))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
