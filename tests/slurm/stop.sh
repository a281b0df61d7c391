#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start.sh DIR started: cancel its jobs, then end slurmd, slurmctld and
# munged by the pids in DIR's pid files (each checked to still be that program). Touches nothing else.
set -u
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
[ -d "$1" ] || exit 0
DIR=$(cd "$1" && pwd -P)
export SLURM_CONF="$DIR/slurm.conf"

pid_of() {  # pid_of NAME: the pid in DIR/NAME.pid when it still runs NAME
    local pid
    pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

# Jobs of this (private) cluster first, so that no slurmstepd or job process outlives it.
if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && [ -f "$SLURM_CONF" ]; then
    if [ -n "$(timeout 10 squeue -h -t PD,R,CG,S,RQ,RS,CF -o %i 2>/dev/null)" ]; then
        timeout 10 scancel --full --state=PENDING,RUNNING,SUSPENDED >/dev/null 2>&1 || true
        timeout 10 scancel --full --state=CONFIGURING,REQUEUED >/dev/null 2>&1 || true
        end=$((SECONDS + 20))
        while [ $SECONDS -lt $end ] && [ -n "$(timeout 5 squeue -h -t PD,R,CG,S,CF -o %i 2>/dev/null)" ]; do
            sleep 0.5
        done
    fi
fi

pids=""
for d in slurmd slurmctld munged; do  # all at once: each takes ~2 s to exit
    pid=$(pid_of "$d") && kill -TERM "$pid" 2>/dev/null && pids="$pids $pid"
done
for pid in $pids; do
    for _ in $(seq 100); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
done
rm -f "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munged.pid"

if [ -f "$DIR/alias" ]; then
    alias_path=$(cat "$DIR/alias")
    case "$alias_path" in /tmp/slurm-*) [ -L "$alias_path" ] && rm -f "$alias_path" ;; esac
    rm -f "$DIR/alias"
fi
exit 0
