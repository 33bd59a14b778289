"""Pre-train one run (run by `python` or `torchrun`); exit 75 after a SIGTERM checkpoint."""

import argparse
import json
import logging
import sys

from cgdmae.pretrain.engine import EXIT_PREEMPTED, Preempted
from cgdmae.pretrain.run import run_pretraining

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--run", required=True)
parser.add_argument("--spec", required=True, help="the run's resolved config, as JSON")
parser.add_argument("--images", required=True, help="pool directory or curation manifest")
parser.add_argument("--teacher", default="")
parser.add_argument("--targets", default="")
parser.add_argument(
    "--teacher-checkpoint", default="", help="MAE-Lite: the teacher run's checkpoint"
)
parser.add_argument("--out", required=True)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
try:
    run_pretraining(
        json.loads(args.spec),
        args.images,
        args.out,
        seed=args.seed,
        teacher_dir=args.teacher or None,
        targets=args.targets or None,
        teacher_checkpoint=args.teacher_checkpoint or None,
    )
except Preempted as exc:
    logging.warning("%s: %s", args.run, exc)
    sys.exit(EXIT_PREEMPTED)
