"""Is the DVC remote there? One line naming it and how to set it, before ``dvc pull`` tries.

``dvc pull`` from a remote that does not exist (a fresh clone whose default remote is a path
on another machine) prints "Everything is up to date." and then a checkout error for each
output, never naming the remote. ``make pull`` runs ``python -m cgdmae.dvc_remote`` first.
"""

from __future__ import annotations

import sys
from pathlib import Path

HOW_TO_SET = "set it with: make pull DVC_REMOTE=<url or path>"


def remote_problem(repo: str | Path = ".") -> str | None:
    """None when the default DVC remote of ``repo`` can be read, else one line saying why not,
    with its URL and the command that points it elsewhere."""
    from dvc.config import NoRemoteError, RemoteNotFoundError
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        try:
            remote = dvc.cloud.get_remote(command="pull")
        except NoRemoteError:
            return f"no DVC remote is configured; {HOW_TO_SET}"
        except RemoteNotFoundError as exc:  # core.remote names a remote with no section
            return f"{exc}; {HOW_TO_SET}"
        name = dvc.config["core"].get("remote", "")
        url = dvc.config["remote"].get(name, {}).get("url", remote.path)
        try:
            found = remote.fs.exists(remote.path)
        except Exception as exc:  # credentials, network: whatever the file system says
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"the DVC remote '{name}' at {url} cannot be read ({reason}); {HOW_TO_SET}"
        if not found:
            return f"the DVC remote '{name}' at {url} does not exist; {HOW_TO_SET}"
    return None


def main() -> int:
    problem = remote_problem()
    if problem is None:
        return 0
    print(f"make pull: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
