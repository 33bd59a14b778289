"""Fine-tuning: BoT losses, the backbone from encoder.pth, bad input, resume, every task end to end."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

from cgdmae.config import validate_config
from cgdmae.data import DatasetFormatError, RandomIdentitySampler
from cgdmae.data.synth import writers
from cgdmae.finetune.backbone import EncoderMismatchError, load_vit
from cgdmae.finetune.run import run_finetune
from cgdmae.finetune.tasks import FinetuneTask, batch_hard_triplet
from cgdmae.models import create_mae, save_encoder
from cgdmae.pretrain.engine import Preempted

SCHEMA = Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml"
MODEL = {
    "size": "tiny",
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "img_size": [32, 32],
    "patch_size": 8,
}
SMALL = {"image_size": (32, 32), "n_cameras": 4}


def task_spec(**overrides):
    """A task config with the schema's defaults filled, as the workflow passes it."""
    config = {"finetune": {"reid": overrides}}
    validate_config(config, SCHEMA)
    spec = dict(config["finetune"]["reid"])
    spec.pop("datasets")
    return spec


def tiny_spec(**overrides):
    base = dict(
        img_size=[32, 32],
        epochs=2,
        warmup_epochs=1,
        batch_size=8,
        instances=2,
        pad=2,
        drop_path=0.0,
        eval_batch_size=16,
        num_workers=0,
        save_every=1,
        precision="fp32",
    )
    return task_spec(**(base | overrides))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    writers.write_veri776(
        root / "veri776",
        n_train_ids=6,
        n_test_ids=4,
        images_per_id=4,
        cameras_per_id=2,
        query_per_id=1,
        **SMALL,
    )
    writers.write_vehicleid(
        root / "vehicleid", n_train_ids=6, test_sizes=[2, 3, 4], images_per_id=3, **SMALL
    )
    writers.write_vfr(root / "vfr", n_train_per_class=1, n_test_per_class=1, **SMALL)
    writers.write_vps(root / "vps", n_train=6, n_val=3, **SMALL)
    torch.manual_seed(0)
    mae = create_mae(
        "tiny",
        img_size=(32, 32),
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
    )
    save_encoder(mae, root / "encoder.pth")
    return root


def dataset(root, name, fmt=None):
    formats = {"vfr": "image_folder", "vps": "segmentation"}
    return {"format": fmt or formats.get(name, name), "path": str(root / name)}


def test_batch_hard_triplet_matches_a_loop():
    torch.manual_seed(0)
    features, pids = torch.randn(12, 5), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    for margin in (0.3, None):
        expected = []
        for i in range(12):
            dists = [(features[i] - features[j]).norm() for j in range(12)]
            positive = max(d for j, d in enumerate(dists) if pids[j] == pids[i])
            negative = min(d for j, d in enumerate(dists) if pids[j] != pids[i])
            gap = positive - negative
            expected.append(
                torch.nn.functional.softplus(gap) if margin is None else (gap + margin).clamp(min=0)
            )
        got = batch_hard_triplet(features, pids, margin)
        torch.testing.assert_close(got, torch.stack(expected).mean(), atol=1e-5, rtol=1e-5)


def test_pk_sampler_has_a_fixed_length_and_skips_on_resume():
    pids = [p for p in range(7) for _ in range(2 + p % 4)]  # 2..5 images per id
    sampler = RandomIdentitySampler(pids, p=3, k=2, seed=1)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == sampler.batches_per_epoch * 6
        for start in range(0, len(order), 6):
            batch = [pids[i] for i in order[start : start + 6]]
            assert len(set(batch)) == 3 and all(batch.count(p) == 2 for p in set(batch))
    sampler.set_epoch(2, skip_batches=1)
    skipped = list(sampler)
    sampler.set_epoch(2)
    assert skipped == list(sampler)[6:]


def test_backbone_resamples_the_position_embedding(data):
    vit = load_vit(data / "encoder.pth", MODEL, (48, 32))
    assert vit.pos_embed.shape == (1, 1 + 6 * 4, 32)
    same = load_vit(data / "encoder.pth", MODEL, (32, 32))
    encoder = torch.load(data / "encoder.pth", weights_only=True)["model"]
    torch.testing.assert_close(same.pos_embed, encoder["pos_embed"])
    assert same(torch.randn(2, 3, 32, 32)).shape == (2, 32)


def test_encoder_of_another_width_names_both(data):
    with pytest.raises(
        EncoderMismatchError, match=r"encoder\.pth: embedding dimension 32.*embed_dim 64"
    ):
        load_vit(data / "encoder.pth", MODEL | {"embed_dim": 64}, (32, 32))
    with pytest.raises(EncoderMismatchError, match="2 transformer blocks.*has 3"):
        load_vit(data / "encoder.pth", MODEL | {"depth": 3}, (32, 32))


def test_dataset_without_query_split_names_it(data, tmp_path):
    broken = tmp_path / "veri776"
    shutil.copytree(data / "veri776", broken)
    shutil.rmtree(broken / "image_query")
    with pytest.raises(DatasetFormatError, match="image_query"):
        run_finetune(
            "reid",
            dataset(tmp_path, "veri776"),
            data / "encoder.pth",
            MODEL,
            tiny_spec(),
            tmp_path / "out/metrics.json",
        )


def test_segmentation_class_count_mismatch_names_classes_txt(data, tmp_path):
    with pytest.raises(DatasetFormatError, match=r"num_classes=4 .*classes\.txt lists 6"):
        run_finetune(
            "vps",
            dataset(data, "vps"),
            data / "encoder.pth",
            MODEL,
            tiny_spec(num_classes=4),
            tmp_path / "metrics.json",
        )


def test_task_rejects_a_dataset_it_cannot_read(data, tmp_path):
    with pytest.raises(ValueError, match="vps cannot use a veri776 dataset"):
        run_finetune(
            "vps",
            dataset(data, "veri776"),
            data / "encoder.pth",
            MODEL,
            tiny_spec(),
            tmp_path / "metrics.json",
        )


@pytest.mark.parametrize(
    ("task", "name", "expected"),
    [
        ("reid", "veri776", {"test": {"mAP", "rank1", "rank5", "mINP"}}),
        ("reid", "vehicleid", {f"test{n}": {"rank1", "rank5"} for n in (800, 1600, 2400)}),
        ("var", "veri776", {"test": {"mA", "accuracy", "f1", "color", "type"}}),
        ("vfr", "vfr", {"test": {"top1"}}),
        ("vps", "vps", {"val": {"mIoU", "mAcc"}}),
    ],
)
def test_every_task_writes_its_metrics(data, tmp_path, task, name, expected):
    out = tmp_path / "metrics.json"
    spec = tiny_spec(epochs=1, batch_size=4 if task == "vps" else 8)
    record = run_finetune(
        task, dataset(data, name), data / "encoder.pth", MODEL, spec, out, seeds=(3,)
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert set(record["metrics"]) == set(expected)
    for protocol, keys in expected.items():
        assert keys <= set(record["metrics"][protocol])
    assert len(record["encoder_sha256"]) == 64 and record["config"] == spec
    assert record["num_train"] > 0 and record["num_test"] > 0 and record["epochs"] == 1
    for value in json.dumps(record["metrics"]).replace("{", " ").split():
        assert "NaN" not in value


def test_finetuning_resumes_bit_exact_after_sigterm(data, tmp_path, monkeypatch):
    spec = tiny_spec(epochs=2)
    args = ("reid", dataset(data, "veri776"), data / "encoder.pth", MODEL, spec)
    whole = run_finetune(*args, tmp_path / "whole/metrics.json")

    def preempt_at_step_2(self, step, total_steps):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as patch:
        patch.setattr(FinetuneTask, "on_step_end", preempt_at_step_2)
        with pytest.raises(Preempted):
            run_finetune(*args, tmp_path / "cut/metrics.json")
    assert not (tmp_path / "cut/metrics.json").exists()
    saved = torch.load(tmp_path / "cut/work/seed0/checkpoint.pth", weights_only=False)
    assert saved["step"] == 2 and saved["epoch"] == 0
    resumed = run_finetune(*args, tmp_path / "cut/metrics.json")
    assert resumed["metrics"] == whole["metrics"] and resumed["final_loss"] == whole["final_loss"]
    a = torch.load(tmp_path / "whole/work/seed0/checkpoint.pth", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut/work/seed0/checkpoint.pth", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_embedded_default_finetune_config_is_valid():
    config = yaml.safe_load((SCHEMA.parents[2] / "config/config.yaml").read_text())
    validate_config(config, SCHEMA)
    assert config["finetune"]["reid"]["datasets"] == ["veri776", "vehicleid"]


def test_several_seeds_give_the_mean_and_each_seed(data, tmp_path):
    from cgdmae.report.tables import build_table

    spec = tiny_spec(epochs=1, batch_size=8)
    out = tmp_path / "results/finetune/r/vfr/vfr/metrics.json"
    record = run_finetune("vfr", dataset(data, "vfr"), data / "encoder.pth", MODEL, spec, out,
                          seeds=(0, 1))  # fmt: skip
    top1 = [record["per_seed"][s]["test"]["top1"] for s in ("0", "1")]
    assert record["metrics"]["test"]["top1"] == pytest.approx(sum(top1) / 2)
    table = build_table("c", "run", [("r", "r")], [("vfr", "vfr")],
                        {"results/finetune/r/vfr/vfr/metrics.json": [record]})  # fmt: skip
    ((_, [cell]),) = table.cells()
    mean, std = 100 * sum(top1) / 2, 100 * abs(top1[0] - top1[1]) / 2**0.5
    assert cell["text"] == f"{mean:.1f} ± {std:.1f}"
