#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine (Debian packages, no systemd), with NGPU
# (default 2) fake GPUs as GRES (device files that are /dev/null), for the Slurm workflow test and the paper
# rehearsal. Needs root and apt. Idempotent: daemons that are already up are left alone,
# unless the configuration changed (then they are restarted with it). Without slurmdbd, so the Snakemake Slurm plugin must
# query job states with squeue (finished jobs stay visible for MinJobAge seconds: an hour, longer than the
# time-limit test takes on a slow machine, which lists all of its jobs at the end).
set -euo pipefail
NGPU="${NGPU:-2}"
[ "$(id -u)" = 0 ] || { echo "single_node.sh: needs root" >&2; exit 2; }

packages=(munge slurmctld slurmd slurm-client)
installed=$(dpkg-query -W -f='${Status}\n' "${packages[@]}" 2>/dev/null | grep -c "install ok installed" || true)
if [ "$installed" != "${#packages[@]}" ]; then
  # keep the packages' init scripts from starting daemons during installation
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

mkdir -p /etc/slurm /var/lib/slurm/ctld /var/lib/slurm/d /var/log/slurm /run/munge
chown slurm:slurm /var/lib/slurm/ctld /var/log/slurm
chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key

hardware=$(slurmd -C | head -1 | cut -d' ' -f2-)   # CPUs=... RealMemory=...
cat > /etc/slurm/slurm.conf.new <<CONF
ClusterName=cgdmae-test
SlurmctldHost=localhost(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/lib/slurm/ctld
SlurmdSpoolDir=/var/lib/slurm/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
KillWait=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 $hardware Gres=gpu:$NGPU State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
# slurmd counts GPUs by their device files: fake ones, with /dev/null's major:minor
mkdir -p /var/lib/slurm/fakegpu
for i in $(seq 0 $((NGPU - 1))); do
  [ -c /var/lib/slurm/fakegpu/gpu$i ] || mknod -m 666 /var/lib/slurm/fakegpu/gpu$i c 1 3
done
printf 'AutoDetect=off\nNodeName=localhost Name=gpu File=/var/lib/slurm/fakegpu/gpu[0-%s]\n' $((NGPU - 1)) > /etc/slurm/gres.conf.new
changed=0
for f in slurm.conf gres.conf; do
  if cmp -s /etc/slurm/$f.new /etc/slurm/$f; then rm /etc/slurm/$f.new; else mv /etc/slurm/$f.new /etc/slurm/$f; changed=1; fi
done
if [ $changed = 1 ]; then  # daemons started with another configuration: restart them
  pkill -x slurmd || true
  pkill -x slurmctld || true
  while pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null; do sleep 0.2; done
fi

until_ok() {  # until_ok SECONDS COMMAND...: retry a check until it passes or time runs out
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "single_node.sh: timed out on: $*" >&2; exit 1; }
    sleep 0.5
  done
}
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
until_ok 20 bash -c 'munge -n | unmunge'
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
until_ok 60 bash -c 'scontrol ping | grep -q UP'
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd -N localhost
scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
until_ok 180 bash -c 'sinfo -h -n localhost -o %t | grep -qE "idle|mix|alloc"'
# Jobs left over from an earlier run (a rehearsal whose snakemake was killed) would hold the
# node's GPUs, and the next run's jobs would pend until its timeout: refuse, naming them.
live=$(squeue -h -t PENDING,RUNNING,CONFIGURING,SUSPENDED -o "%i %T %j" || true)  # COMPLETING ones free up by themselves
if [ -n "$live" ]; then
  {
    echo "single_node.sh: the test Slurm still has jobs from an earlier run, which would hold its resources:"
    echo "$live"
    echo "Cancel them with: scancel $(echo "$live" | awk '{print $1}' | sed 's/_.*//' | sort -u | tr '\n' ' ')"
  } >&2
  exit 3
fi
sinfo
