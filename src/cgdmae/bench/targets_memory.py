"""Memory of a teacher-target store opened by every rank of a DDP job.

    python -m cgdmae.bench.targets_memory --images 200000 --views 4 --dim 768 --ranks 8

Writes a synthetic store of ``images`` × ``views`` × ``dim`` float16 embeddings in the format
``cache_teacher_targets`` writes, then starts ``ranks`` processes that each open it with
``TeacherTargets.load`` (memory-mapped) and read ``reads`` random rows, as a rank's loader
does. Each reports the anonymous memory it gained (``Anonymous`` of /proc/self/smaps_rollup:
memory the rank alone holds and the kernel cannot drop) and its resident set (RSS, which also
counts the store's pages in the page cache: shared by every rank that maps them, and
reclaimable). With ``--no-mmap`` the ranks read the file into their own memory instead, as
before the store was mapped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
from pathlib import Path

import torch

from cgdmae.models import atomic_save
from cgdmae.pretrain.data import TeacherTargets


def memory_kb() -> dict[str, int]:
    """This process's anonymous and resident memory, in kB."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")
        fields[key] = int(value.split()[0])
    return {"anonymous": fields["Anonymous"], "rss": fields["Rss"]}


def rank(path: str, reads: int, mmap: bool, seed: int, out: mp.Queue) -> None:
    before = memory_kb()
    if mmap:
        targets = TeacherTargets.load(path)
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
        targets = TeacherTargets(list(data["paths"]), data["crops"], data["embeds"])
    rows = torch.randint(
        len(targets.paths), (reads,), generator=torch.Generator().manual_seed(seed)
    )
    total = sum(float(targets.embeds[int(i), 0, 0]) for i in rows)
    after = memory_kb()
    out.put({k: after[k] - before[k] for k in after} | {"checksum": total})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200_000)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--ranks", type=int, default=8)
    p.add_argument("--reads", type=int, default=10_000)
    p.add_argument("--no-mmap", action="store_true")
    p.add_argument("--dir", default=None, help="where to write the store (a temp folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "targets.pt"
        n, k = args.images, args.views
        store = {
            "paths": [f"images/{i:07d}.jpg" for i in range(n)],
            "crops": torch.zeros(n, k, 5, dtype=torch.int32),
            "embeds": torch.randn(n, k, args.dim).half(),
            "views": k,
            "img_size": [224, 224],
            "scale": [0.2, 1.0],
        }
        atomic_save(store, path)
        store_mb = (store["embeds"].nbytes + store["crops"].nbytes) / 2**20
        del store
        queue: mp.Queue = mp.get_context("spawn").Queue()
        procs = [
            mp.get_context("spawn").Process(
                target=rank, args=(str(path), args.reads, not args.no_mmap, r, queue)
            )
            for r in range(args.ranks)
        ]
        for proc in procs:
            proc.start()
        results = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
    own = max(r["anonymous"] for r in results) / 1024
    print(
        json.dumps(
            {
                "store_mb": round(store_mb),
                "ranks": args.ranks,
                "mmap": not args.no_mmap,
                "max_anonymous_mb_per_rank": round(own, 1),
                "anonymous_share_of_store": round(own / store_mb, 4),
                "max_rss_gain_mb_per_rank": round(max(r["rss"] for r in results) / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
