"""Warm starts (cgdmae.warm): a script handed to the server runs in a fork that already has the
libraries imported, with the script's own argv, directory, environment and streams; it computes
what it computes cold; signals and exit statuses pass through; a dead client takes its fork."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cgdmae.warm import SOCKET_ENV, warm_server

PREAMBLE = """\
import json, os, sys
torch_preloaded = "torch" in sys.modules
from cgdmae.warm import fork_from_warm_process
fork_from_warm_process()
"""


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server():
    """A warm server with the default preloads, listening; yields (its socket, its pid)."""
    with warm_server(ready_within=120) as address_and_pid:
        yield address_and_pid


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.py"
    path.write_text(PREAMBLE + textwrap.dedent(body))
    return path


def run(path: Path, address: str | None, *args: str, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    if address:
        env[SOCKET_ENV] = address
    env.update(kwargs.pop("env", {}))
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_script_runs_in_a_fork_with_its_own_argv_cwd_env_and_streams(server, tmp_path):
    address, server_pid = server
    workdir = tmp_path / "work"
    workdir.mkdir()
    path = script(
        tmp_path,
        """
        print("to stdout"); print("to stderr", file=sys.stderr)
        json.dump({"ppid": os.getppid(), "cwd": os.getcwd(), "argv": sys.argv,
                   "flag": os.environ.get("JOB_FLAG"), "preloaded": torch_preloaded},
                  open("facts.json", "w"))
        sys.exit(3)
        """,
    )
    proc = run(path, address, "a", "b", cwd=workdir, env={"JOB_FLAG": "x"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert out == "to stdout\n" and err == "to stderr\n"
    facts = json.loads((workdir / "facts.json").read_text())
    assert facts == {
        "ppid": server_pid,
        "cwd": str(workdir),
        "argv": [str(path), "a", "b"],
        "flag": "x",
        "preloaded": True,
    }


def test_without_a_server_or_inside_slurm_the_script_runs_in_its_own_process(server, tmp_path):
    path = script(tmp_path, "print(os.getppid(), torch_preloaded)")
    for address, env in [
        (None, {}),
        (str(tmp_path / "no-server"), {}),
        (server[0], {"SLURM_JOB_ID": "7"}),  # a Slurm job stays where Slurm started it
    ]:
        proc = run(path, address, env=env)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert out.split() == [str(os.getpid()), "False"]


TRAIN = """
import torch
from timm.models.vision_transformer import VisionTransformer
torch.set_num_threads(2)  # the fork's first parallel region: the server never had a pool
torch.manual_seed(0)
model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                          num_classes=5)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 5, (16,))
losses = []
for _ in range(3):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward(); opt.step(); opt.zero_grad()
    losses.append(loss.item())
print(json.dumps({"losses": losses, "weights": sum(p.double().sum().item()
                  for p in model.parameters()), "warm": torch_preloaded}))
"""


def test_training_in_a_fork_equals_training_cold(server, tmp_path):
    path = script(tmp_path, TRAIN)
    results = []
    for address in (None, server[0]):
        proc = run(path, address)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    cold, warm = results
    assert (cold.pop("warm"), warm.pop("warm")) == (False, True)
    assert cold == warm  # bit-exact: same losses, same weights


def test_sigterm_to_the_job_reaches_the_fork(server, tmp_path):
    path = script(
        tmp_path,
        """
        import signal, time
        def checkpoint(signum, frame):
            open("checkpointed", "w").close(); sys.exit(75)
        signal.signal(signal.SIGTERM, checkpoint)
        open("ready", "w").close()
        time.sleep(60)
        """,
    )
    proc = run(path, server[0], cwd=tmp_path)
    wait_for((tmp_path / "ready").exists)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 75
    assert (tmp_path / "checkpointed").exists()


def test_a_killed_job_takes_its_fork_with_it(server, tmp_path):
    path = script(
        tmp_path,
        """
        import time
        open("pid", "w").write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    proc = run(path, server[0], cwd=tmp_path)
    wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text())
    fork = int((tmp_path / "pid").read_text())
    assert fork != proc.pid
    proc.kill()
    proc.communicate(timeout=30)

    def gone() -> bool:
        try:
            os.kill(fork, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 30)


def test_wrapper_runs_the_command_and_stops_its_server(tmp_path):
    path = script(tmp_path, "print(os.environ['CGDMAE_WARM_SOCKET']); sys.exit(4)")
    proc = subprocess.run(
        [sys.executable, "-m", "cgdmae.warm", "--", sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4
    address = Path(proc.stdout.strip())
    assert address.name == "socket" and address.parent.name.startswith("cgdmae-warm-")
    assert not address.parent.exists()  # the server's private directory is gone with it


def test_a_request_that_is_not_a_clients_is_refused_and_the_server_serves_on(server, tmp_path):
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(server[0])
        conn.sendall(b"not json\n")
        assert conn.recv(64) == b""  # closed without a fork
    path = script(tmp_path, "print(os.getppid())")
    proc = run(path, server[0])
    out, _ = proc.communicate(timeout=60)
    assert (proc.returncode, out.strip()) == (0, str(server[1]))


def test_ctrl_c_reaches_the_job_once_and_the_wrapper_waits_for_it(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            while not os.path.exists(os.environ["CGDMAE_WARM_SOCKET"]):  # be a warm job
                time.sleep(0.05)
            from cgdmae.warm import fork_from_warm_process
            fork_from_warm_process()
            open("ready", "w").write(str(os.getppid()))
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                time.sleep(0.5)  # cleaning up: the wrapper must wait, not kill the command
                open("cleaned-up", "w").close()
                sys.exit(130)
            """
        )
    )
    wrapper = subprocess.Popen(
        [sys.executable, "-m", "cgdmae.warm", "--", sys.executable, str(path)],
        cwd=tmp_path,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    ready = tmp_path / "ready"
    wait_for(lambda: ready.exists() and ready.read_text())
    assert int(ready.read_text()) != wrapper.pid  # the job ran in a fork of the server
    os.killpg(wrapper.pid, signal.SIGINT)  # what Ctrl-C does
    assert wrapper.wait(60) == 130
    assert (tmp_path / "cleaned-up").exists()
