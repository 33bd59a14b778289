"""A table's numbers trace to the exact data and teacher weights they were measured with."""

import json

from cgdmae.files import dataset_fingerprint, file_sha256
from cgdmae.report.provenance import provenance


def test_dataset_fingerprint_follows_the_file_list_and_sizes(tmp_path):
    root = tmp_path / "veri776"
    (root / "image_train").mkdir(parents=True)
    (root / "name_train.txt").write_text("a.jpg\n")
    (root / "image_train" / "a.jpg").write_bytes(b"x" * 10)
    first = dataset_fingerprint(root)
    assert len(first) == 16 and dataset_fingerprint(root) == first
    (root / "image_train" / "a.jpg").write_bytes(b"y" * 10)  # same size: same listing
    assert dataset_fingerprint(root) == first
    (root / "image_train" / "a.jpg").write_bytes(b"y" * 11)
    resized = dataset_fingerprint(root)
    (root / "image_train" / "b.jpg").write_bytes(b"z")
    assert len({first, resized, dataset_fingerprint(root)}) == 3


def test_provenance_names_each_dataset_and_teacher_weights(tmp_path):
    weights = tmp_path / "clip.bin"
    weights.write_bytes(b"weights")
    teacher = tmp_path / "clip_l14" / "metrics.json"
    teacher.parent.mkdir()
    teacher.write_text(json.dumps({"weights_sha256": file_sha256(weights)}))
    records = [
        {"device": "cuda", "dataset": {"path": "/data/VeRi"}, "dataset_fingerprint": "ab" * 8},
        {"device": "cuda", "dataset": {"path": "/data/VeRi"}, "dataset_fingerprint": "ab" * 8},
        {"device": "cuda", "dataset": {"path": "/data/VehicleID"}, "dataset_fingerprint": "cd" * 8},
    ]
    lines = provenance({"seed": 0}, ["config/paper.yaml"], records, [teacher])
    assert lines["data"] == f"VeRi {'ab' * 8}, VehicleID {'cd' * 8}"
    assert lines["teacher weights"] == f"clip_l14 {file_sha256(weights)[:12]}"
