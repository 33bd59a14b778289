"""GPU paths that CPU tests cannot reach: bf16 training, ``torch.compile``, NCCL DDP, resume.

    python -m cgdmae.bench.gpu_check --out gpu_check.json

Each check trains the real engine (:func:`cgdmae.training.engine.train`) on random images:

* ``train``: MAE ViT-B/16 at 224, bf16 autocast and fused AdamW, 2 epochs; the loss must fall
  and stay finite, and the checkpoint must load back with ``weights_only=True``.
* ``resume``: the same run stopped after epoch 1 (a step cap) and resumed; its weights are compared with the
  straight run's (bitwise equality is reported, not required: cuDNN/cuBLAS backward kernels
  may use atomics).
* ``compile``: the same step under ``torch.compile``; its first losses must match eager bf16
  within bf16 tolerance.
* ``ddp``: one NCCL rank wrapped in DistributedDataParallel (the wrapper, the gradient hooks
  and ``no_sync`` under compile); more ranks need more GPUs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from cgdmae.models import create_mae
from cgdmae.pretrain.methods import with_defaults
from cgdmae.training.checkpoint import load_checkpoint
from cgdmae.training.engine import LOG_CSV, TrainConfig, train


class RandomImages(Dataset):
    """Fixed random images, so runs differ only by the code path under test."""

    def __init__(self, n: int, size: int) -> None:
        self.images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index]}


def read_log(out: Path) -> list[dict[str, str]]:
    with open(out / LOG_CSV) as f:
        return list(csv.DictReader(f))


def _mae(size: int):
    return with_defaults("mae", create_mae("base", img_size=size, norm_pix_loss=True))


def _train(
    out: Path, *, compile: bool, size: int, n: int, batch: int, max_steps: int | None = None
) -> dict:
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=batch, blr=1.5e-4, warmup_epochs=1, seed=0,
                      compile=compile, precision="bf16", save_every=1, max_steps=max_steps)  # fmt: skip
    start = time.perf_counter()
    train(_mae(size), RandomImages(n, size), cfg, out)
    seconds = time.perf_counter() - start
    losses = [float(row["loss"]) for row in read_log(out)]
    return {"seconds": round(seconds, 1), "losses": losses}


def check_train_resume_compile(work: Path, size: int, n: int, batch: int) -> dict:
    report: dict = {}
    straight = _train(work / "straight", compile=False, size=size, n=n, batch=batch)
    state = load_checkpoint(work / "straight" / "checkpoint.pth")
    losses = straight["losses"]
    falling = all(map(math.isfinite, losses)) and losses[-1] < losses[0]
    report["train"] = {**straight, "finite_and_falling": falling, "step": state["step"]}
    _train(work / "resumed", compile=False, size=size, n=n, batch=batch, max_steps=n // batch)
    _train(work / "resumed", compile=False, size=size, n=n, batch=batch)
    resumed = load_checkpoint(work / "resumed" / "checkpoint.pth")
    diffs = [(resumed["model"][k].float() - v.float()).abs().max().item()
             for k, v in state["model"].items()]  # fmt: skip
    report["resume"] = {"bitwise_equal": max(diffs) == 0.0, "max_abs_diff": max(diffs),
                        "losses": [float(r["loss"]) for r in read_log(work / "resumed")]}  # fmt: skip
    compiled = _train(work / "compiled", compile=True, size=size, n=n, batch=batch)
    report["compile"] = {**compiled, "first_loss_rel_diff": abs(compiled["losses"][0] - straight["losses"][0]) / abs(straight["losses"][0])}  # fmt: skip
    return report


def check_ddp(size: int, batch: int) -> dict:
    """One NCCL rank under DDP: a compiled bf16 step with ``no_sync`` then a synced one."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        method = _mae(size).cuda()
        ddp = torch.nn.parallel.DistributedDataParallel(method, device_ids=[0])
        step = torch.compile(ddp)
        optimizer = torch.optim.AdamW(method.parameters(), lr=1e-4, fused=True)
        images = torch.randn(batch, 3, size, size, device="cuda")
        losses = []
        for sync in (False, True, True):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                if sync:
                    loss = step({"image": images})["loss"]
                    loss.backward()
                else:
                    with ddp.no_sync():
                        loss = step({"image": images})["loss"]
                        loss.backward()
            if sync:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss))
        return {"nccl_version": ".".join(map(str, torch.cuda.nccl.version())), "losses": losses,
                "finite": all(map(math.isfinite, losses))}  # fmt: skip
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device")
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with TemporaryDirectory() as work:
        report |= check_train_resume_compile(Path(work), args.size, args.images, args.batch)
    report["ddp"] = check_ddp(args.size, args.batch)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
