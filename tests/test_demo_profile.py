"""cgdmae.bench.demo_profile reads job times and threads from a Snakemake log."""

from cgdmae.bench.demo_profile import parse_log, profile

LOG = """\
Select jobs to execute...
Execute 2 jobs...
[Sat Dec  5 10:00:00 2026]
localrule teacher:
    output: results/teacher/clip_small/model
    jobid: 3
    wildcards: teacher=clip_small
    threads: 2
    resources: tmpdir=/tmp

[Sat Dec  5 10:00:05 2026]
rule finetune:
    output: results/finetune/mae/reid/veri776/metrics.json
    jobid: 7
    resources: tmpdir=/tmp
[Sat Dec  5 10:00:35 2026]
Finished jobid: 7 (Rule: finetune)
1 of 3 steps (33%) done
[Sat Dec  5 10:01:00 2026]
Finished jobid: 3 (Rule: teacher)
[Sat Dec  5 10:01:00 2026]
rule finetune:
    jobid: 8
[Sat Dec  5 10:01:09 2026]
Finished jobid: 8 (Rule: finetune)
[Sat Dec  5 10:01:10 2026]
rule pretrain:
    jobid: 9
"""


def test_jobs_their_seconds_and_threads(tmp_path):
    path = tmp_path / "run.snakemake.log"
    path.write_text(LOG)
    jobs = parse_log(path)
    assert sorted(jobs) == [3, 7, 8]  # job 9 never finished: left out
    assert (jobs[3].rule, jobs[3].seconds, jobs[3].threads) == ("teacher", 60.0, 2)
    assert (jobs[7].seconds, jobs[7].threads, jobs[8].seconds) == (30.0, 1, 9.0)
    rows = {rule: rest for rule, *rest in profile(jobs)}
    assert rows["teacher"] == [1, 1.0, 2.0]  # one job, one minute, two threads
    assert rows["finetune"][0] == 2 and abs(rows["finetune"][1] - 39 / 60) < 1e-9
