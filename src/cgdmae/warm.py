"""Warm starts for local jobs: one process imports torch, torchvision, timm (and the plotting
libraries) once, and each job of a local Snakemake run is a fork of it, so the job skips their
~3.5 s of imports.

On a laptop the demo's 88 jobs each paid those 3 s before doing any work (a quarter of a
fine-tuning job; docs/benchmarks.md). Run the workflow under a warm server:

    python -m cgdmae.warm -- snakemake all --cores 2

A workflow script calls :func:`fork_from_warm_process` before its heavy imports. With
``CGDMAE_WARM_SOCKET`` set (by the command above), it hands the server its script, argv,
working directory, environment and standard streams; the server forks, the fork runs the script
from the top (where the call now returns at once), and the script's process waits, passes on
SIGTERM, SIGINT and SIGHUP, and exits with the fork's status. Without the variable, or with no
server listening, or inside a Slurm job, the call returns and the script runs in its own
process, as it does on a cluster. Either way it computes the same thing (``tests/test_warm.py``).

The server imports the libraries, not the project's modules, so a job always runs the
project's current code. It forks from its main thread before any torch op, so no OpenMP pool is copied.
Its socket lives in a private temporary directory (mode 0700): only the user who started it can
hand it a script to run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

SOCKET_ENV = "CGDMAE_WARM_SOCKET"
_FORKED_ENV = "CGDMAE_WARM_FORKED"  # set in a fork: the script's call must return at once
PRELOAD = ("numpy", "PIL.Image", "torch", "torchvision", "timm", "open_clip", "pandas", "seaborn")
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_MAX_REQUEST = 1 << 20


def fork_from_warm_process() -> None:
    """Continue this script in a fork of the warm server, if one is listening; see the module
    docstring. Returns in the fork, or where no server is; otherwise never returns."""
    address = os.environ.get(SOCKET_ENV)
    if not address or os.environ.pop(_FORKED_ENV, None) or "SLURM_JOB_ID" in os.environ:
        return  # a Slurm job stays in the process (and cgroup) Slurm started
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:
        conn.close()  # no server (yet, or any more): run here
        return
    request = {
        "script": os.path.abspath(sys.argv[0]),
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
    }
    try:
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        child = int(_read_line(conn))
    except (OSError, ValueError):
        conn.close()  # the server refused or went away before forking: run here
        return
    for sig in _FORWARDED:
        signal.signal(sig, lambda signum, frame: os.kill(child, signum))
    try:
        status = int(_read_line(conn))  # the fork's exit status, as if this process had run it
    except (OSError, ValueError) as error:
        print(f"cgdmae.warm: lost the warm server while job {child} ran: {error}", file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _read_line(conn: socket.socket, data: bytes = b"") -> str:
    """One newline-ended message from a stream socket (``data``: what has come of it already)."""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("the warm server closed the connection")
        data += chunk
    return data.decode().strip()


def _exit_status(wait_status: int) -> int:
    """A shell's exit status for a child: its code, or 128 + the signal that killed it."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def _run_script(request: dict, fds: list[int]) -> int:
    """In the fork: take on the client's streams, directory, environment and argv, then run its
    script as ``__main__``. Returns the exit status."""
    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the job's process, which passes it on once
    for sig in (*_FORWARDED, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"], **{_FORKED_ENV: "1"})
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(request["script"])
    try:
        runpy.run_path(request["script"], run_name="__main__")
        status = 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            status = exit_.code or 0
        else:  # sys.exit("message"): printed, status 1, as Python does
            print(exit_.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        status = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr):  # os._exit follows, which flushes nothing
        with contextlib.suppress(Exception):
            stream.flush()
    return status


class Server:
    """Accepts a script per connection and forks to run it; reports each fork's pid, then its
    exit status. A client that goes away takes its fork with it (SIGTERM)."""

    def __init__(self, address: str | Path):
        self.address = str(address)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.address)
        self.listener.listen(64)
        # fork pid -> its client's connection (None once the client has gone)
        self.children: dict[int, socket.socket | None] = {}
        self.wakeup = os.pipe()
        os.set_blocking(self.wakeup[1], False)
        signal.set_wakeup_fd(self.wakeup[1])
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the jobs; the wrapper ends us
        signal.signal(signal.SIGTERM, self._stop)
        self.running = True

    def _stop(self, signum, frame) -> None:
        self.running = False

    def serve(self) -> None:
        while self.running:
            clients = {conn: pid for pid, conn in self.children.items() if conn is not None}
            try:
                readable, _, _ = select.select([self.listener, self.wakeup[0], *clients], [], [], 5)
            except InterruptedError:
                readable = []
            if self.wakeup[0] in readable:
                os.read(self.wakeup[0], 512)
            if self.listener in readable:
                self._accept()
            for conn, pid in clients.items():
                if conn in readable:  # a client sends nothing after its request: it has gone
                    os.kill(pid, signal.SIGTERM)
                    conn.close()
                    self.children[pid] = None
            self._reap()
        for pid in self.children:
            os.kill(pid, signal.SIGTERM)
        self.listener.close()
        os.unlink(self.address)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            message, fds, _, _ = socket.recv_fds(conn, _MAX_REQUEST, 3)
            request = json.loads(_read_line(conn, message))
            if len(fds) != 3:
                raise ValueError(f"{len(fds)} standard streams passed, not 3")
        except (OSError, ValueError) as error:  # not a client of ours: refuse it, serve on
            print(f"cgdmae.warm: refused a request: {error}", file=sys.stderr)
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for other in (self.listener, conn, *self.children.values()):
                if other is not None:
                    other.close()
            for fd in self.wakeup:
                os.close(fd)
            os._exit(_run_script(request, fds))
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        self.children[pid] = conn

    def _reap(self) -> None:
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):  # the client may be gone
                    conn.sendall(f"{_exit_status(status)}\n".encode())
                conn.close()


def serve(address: str | Path, preload: tuple[str, ...] = PRELOAD) -> None:
    """Import ``preload``, then listen at ``address`` until SIGTERM. Jobs that start before the
    socket exists run cold."""
    for module in preload:
        importlib.import_module(module)
    Server(address).serve()


@contextlib.contextmanager
def warm_server(ready_within: float | None = None) -> Iterator[tuple[str, int]]:
    """A server process in a private directory; yields its socket's address and its pid, and
    stops it on exit. With ``ready_within`` (seconds), first wait until it listens (a server that exits or
    takes longer is an error); without, jobs that start before it listens run cold."""
    with tempfile.TemporaryDirectory(prefix="cgdmae-warm-") as private:  # mode 0700
        address = os.path.join(private, "socket")
        server = subprocess.Popen([sys.executable, "-m", "cgdmae.warm", "--serve", address])
        try:
            deadline = time.monotonic() + (ready_within or 0)
            while ready_within is not None and not os.path.exists(address):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the warm server did not start listening at {address}")
                time.sleep(0.05)
            yield address, server.pid
        finally:
            server.terminate()
            server.wait()


def run_with_warm_server(command: list[str]) -> int:
    """Run ``command`` with a warm server beside it (its socket in ``CGDMAE_WARM_SOCKET``); stop
    the server when the command ends. Returns the command's exit status."""
    with warm_server() as (address, _):
        proc = subprocess.Popen(command, env=os.environ | {SOCKET_ENV: address})
        # Ctrl-C reaches the command from the terminal: let it stop its jobs as it would alone,
        # and wait for it; SIGTERM and SIGHUP sent to this process are passed on
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
        return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="SOCKET", help="be the server, listening at SOCKET")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run, e.g. -- snakemake all --cores 2")
    return run_with_warm_server(command)


if __name__ == "__main__":
    sys.exit(main())
