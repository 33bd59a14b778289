"""The seed methods under two-rank DDP (gloo): their EMA teachers, DINO centre and adapters
stay in step across ranks, and PersonViT (whose views and masks come from the data, not the
process's RNG) takes exactly the steps of one process with the same effective batch."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from method_helpers import write_noise_images

from cgdmae.training.checkpoint import load_checkpoint
from cgdmae.training.engine import TrainConfig, train

TESTS = Path(__file__).parent
METHODS = ("person_mae", "person_vit", "mae_lite")

SCRIPT = """
import sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
import torch.distributed as dist
from test_methods_ddp import METHODS, cases
from cgdmae.training.engine import TrainConfig, train

out = Path({out!r})
for name in METHODS:
    method, data, cfg = cases(sorted((out / "pool").glob("*.png")))[name]
    train(method, data, TrainConfig(**cfg), out / name)
    torch.save(method.state_dict(), out / f"{{name}}.rank{{dist.get_rank()}}.pt")
"""


def cases(paths, batch_size: int = 2):
    """Each seed method with its own tiny model and dataset (from the method's test module)."""
    import test_methods_mae_lite as mae_lite
    import test_methods_person_mae as person_mae
    import test_methods_person_vit as person_vit
    from method_helpers import RESUME_CFG

    from cgdmae.pretrain.views import CrossRegionDataset

    cfg = {**RESUME_CFG, "batch_size": batch_size}
    return {
        "person_mae": (
            person_mae.make_method(),
            CrossRegionDataset(paths, img_size=person_mae.SIZE, max_shift=8, seed=1),
            cfg,
        ),
        "person_vit": (person_vit.make_method(), person_vit.dataset(paths), cfg),
        "mae_lite": (mae_lite.make_method(), mae_lite.RandomImages(), cfg),
    }


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    (out / "pool").mkdir()
    write_noise_images(out / "pool")
    script = out / "ddp.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(TESTS), out=str(out))))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", METHODS)
def test_ranks_end_with_identical_state(ddp_run, name):
    ranks = [torch.load(ddp_run / f"{name}.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    differ = [k for k in ranks[0] if not torch.equal(ranks[0][k], ranks[1][k])]
    assert not differ, f"{name}: rank 0 and rank 1 differ in {differ}"
    checkpoint = load_checkpoint(ddp_run / name / "checkpoint.pth")
    assert checkpoint["train_config"]["world_size"] == 2
    assert checkpoint["step"] == 4 and all(np.isfinite(r["loss"]) for r in checkpoint["log_rows"])
    assert (ddp_run / name / "encoder.pth").exists()


def test_person_vit_ddp_matches_one_process_with_the_same_effective_batch(ddp_run, tmp_path):
    """Catches a centre that is not averaged over ranks: DDP would otherwise broadcast
    rank 0's batch mean as the centre, which differs from the whole batch's."""
    paths = sorted((ddp_run / "pool").glob("*.png"))
    method, data, cfg = cases(paths, batch_size=4)["person_vit"]
    train(method, data, TrainConfig(**cfg), tmp_path)
    ddp = torch.load(ddp_run / "person_vit.rank0.pt", weights_only=True)
    one = method.state_dict()
    assert "center" in " ".join(one)
    for k, v in one.items():
        torch.testing.assert_close(without_key_bias(k, ddp[k]), without_key_bias(k, v), msg=k)


def without_key_bias(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The key bias cannot change attention (softmax ignores a constant per query), so its
    gradient is rounding noise, which Adam scales up to full-size steps in both runs alike."""
    if not name.endswith("attn.qkv.bias"):
        return tensor
    q, _, v = tensor.chunk(3)
    return torch.cat([q, v])
