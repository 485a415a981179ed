#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests that launch sweeps through
# hydra-submitit-launcher's submitit_slurm and requeue runs (`make test-slurm`): Debian's
# slurm-wlm daemons and munge, one node, one partition, requeue allowed. Idempotent: a
# cluster already answering `sinfo` is left as it is. Exits 0 with one line on stderr when
# Slurm cannot be installed or started here (not root, no package manager, no systemd-less
# start); the tests then skip, saying so.
set -uo pipefail

say() { echo "slurm_up: $*" >&2; }

if command -v sinfo >/dev/null 2>&1 && sinfo -h >/dev/null 2>&1; then
  say "a Slurm cluster already answers"; exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  say "cannot install Slurm here (needs root and apt-get); its tests will skip"; exit 0
fi
if ! command -v slurmctld >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    slurmctld slurmd slurm-client munge) >/tmp/slurm_up.apt.log 2>&1 \
    || { say "apt-get could not install Slurm (see /tmp/slurm_up.apt.log); its tests will skip"; exit 0; }
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=lab
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
MpiDefault=none
SchedulerType=sched/builtin
NodeName=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
fi
chown -R root:root /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force 2>/tmp/slurm_up.munge.log \
  || { say "munged would not start (see /tmp/slurm_up.munge.log); Slurm's tests will skip"; exit 0; }
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then
    say "one-node cluster up: $(sinfo -h -o '%P %D %T %c cpus')"; exit 0
  fi
  scontrol update nodename="${host}" state=resume >/dev/null 2>&1
  sleep 1
done
say "slurmctld/slurmd started but the node never came up (see /var/log/slurm/); its tests will skip"
exit 0
