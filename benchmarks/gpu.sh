#!/usr/bin/env bash
# The GPU checks and throughput benchmarks in docs/benchmarks.md, on one GPU, in one go.
#   benchmarks/gpu.sh OUT_DIR        (run from the repository root, cgdmae importable)
# Each part has its own time limit, so one slow part cannot starve the others.
set -u
out=${1:?usage: benchmarks/gpu.sh OUT_DIR}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
part() { # part NAME SECONDS CMD...
    local name=$1 limit=$2; shift 2
    echo "== $name"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "exit $? ($name)"; tail -n 25 "$out/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
part gpu_check 170 python3 -m cgdmae.bench.gpu_check --out "$out/gpu_check.json"
part bench_eager 110 python3 -m cgdmae.bench.pretrain --model base --img 224 --batch 256 \
    --teacher ViT-L-14 --steps 10 --warmup 3
part bench_compile 150 python3 -m cgdmae.bench.pretrain --model base --img 224 --batch 256 \
    --teacher ViT-L-14 --steps 10 --warmup 3 --compile --methods mae "cgd_mae cached" mae_lite
part bench_person_vit_s 40 python3 -m cgdmae.bench.pretrain --model small --img 256 128 \
    --batch 256 --steps 10 --warmup 3 --methods person_vit person_mae
part pytest_gpu 40 python3 -m pytest -q -p no:cacheprovider tests/test_curation.py -k gpu
