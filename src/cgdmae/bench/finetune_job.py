"""Where one fine-tuning job of a config spends its time, on one CPU thread: its wall time,
the share spent decoding images, and the training step alone in fp32 and bf16 autocast.

    python -m cgdmae.bench.finetune_job --config config/config.yaml --run cgd_mae \
        --task reid --dataset veri776 --epochs 10 --work /tmp/ftjob

Reads ``results/pretrain/<run>/encoder.pth`` (run the DAG first); writes under ``--work``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cgdmae.config import SCHEMA, finetune_spec, load_config, run_spec
from cgdmae.data.datasets import load_rgb
from cgdmae.finetune.backbone import load_vit
from cgdmae.finetune.run import run_finetune


def step_ms(encoder: Path, model_cfg: dict, size: tuple[int, int], bf16: bool) -> float:
    """Milliseconds per AdamW step of the fine-tuning ViT on a random 32-image batch."""
    vit = load_vit(encoder, model_cfg, size, 0.0, "token", None)
    head = torch.nn.Linear(vit.embed_dim, 60)
    params = [*vit.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params)
    images, labels = torch.randn(32, 3, *size), torch.randint(0, 60, (32,))
    for i in range(13):
        if i == 3:  # after warm-up
            start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(head(vit.forward_features(images)[:, 0]).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / 10 * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--run", default="cgd_mae")
    parser.add_argument("--task", default="reid")
    parser.add_argument("--dataset", default="veri776")
    parser.add_argument("--epochs", type=int, help="in place of the config's")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config, SCHEMA)
    spec = finetune_spec(cfg, args.task, args.dataset)
    spec["epochs"] = args.epochs or spec["epochs"]
    model_cfg = run_spec(cfg, args.run)["model"]
    encoder = args.results / "pretrain" / args.run / "encoder.pth"
    size = tuple(spec["img_size"])
    fp32, bf16 = (step_ms(encoder, model_cfg, size, b) for b in (False, True))
    print(f"training step, 32 images, one thread: fp32 {fp32:.0f} ms, bf16 autocast {bf16:.0f} ms")
    shutil.rmtree(args.work, ignore_errors=True)  # a finished job would have nothing to do
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(run_finetune, args.task, cfg["datasets"][args.dataset], encoder, model_cfg,
                    spec, args.work / "metrics.json")  # fmt: skip
    wall = time.perf_counter() - start
    stats = pstats.Stats(profile).stats
    decode = next(v[3] for k, v in stats.items() if k[2] == load_rgb.__name__)
    print(f"{args.task} on {args.dataset}, {spec['epochs']} epochs (cProfile on): {wall:.1f} s,"
          f" of which decoding {decode:.1f} s ({decode / wall:.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
