#!/usr/bin/env bash
# Start a private single-node Slurm cluster (munged + slurmctld + slurmd) whose files all live under DIR.
#
#   tests/slurm/start.sh DIR      -> prints "export SLURM_CONF=DIR/slurm.conf" and "export PATH=DIR/bin:$PATH" (a sacct
#                                    stand-in: there is no slurmdbd) on stdout
#   tests/slurm/stop.sh DIR       -> cancels its jobs and stops it again
# Measured figures and Slurm's timing rules (time limits are checked every 30 s): tests/slurm/README.md.
#
# Installs Debian's slurm-wlm and munge first when they are missing and we are root.
# Exit codes: 0 running (idempotent: a second call for the same DIR only prints the export line),
#             2 usage, 3 Slurm is not available here (one line on stderr says why), 4 it failed to start
#             (one line on stderr, with the log to read).
# Environment: SLURM_TEST_CPUS (CPUs the node declares; default max(real CPUs, 4): Slurm is told to trust the
#              configuration, so jobs and tasks may oversubscribe a 2-core machine), SLURM_TEST_WAIT_S (30),
#              SLURM_TEST_NODE (the node's name, default localhost). Works as root or, once installed, as any user.
set -u
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"
unset SLURM_JOB_ID SLURM_JOBID SLURM_STEP_ID SLURM_NODELIST SLURM_JOB_NODELIST  # never inherit an outer job

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
mkdir -p "$1" || { echo "slurm: cannot create $1" >&2; exit 4; }
DIR=$(cd "$1" && pwd -P)
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"
WAIT_S=${SLURM_TEST_WAIT_S:-30}

unavailable() { echo "slurm: $*" >&2; exit 3; }
failed() {  # stop whatever this call started, then say why
    "$(dirname "$0")/stop.sh" "$DIR" >/dev/null 2>&1
    echo "slurm: $*" >&2
    exit 4
}
last_error() { grep -h -E 'fatal|error' "$@" 2>/dev/null | grep -v -E 'pmix|MPI|state file|NOTE:' | tail -n 1; }

# ---------------------------------------------------------------- install
missing=""
for b in slurmctld slurmd munged sbatch; do
    command -v "$b" >/dev/null 2>&1 || missing="$missing $b"
done
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || unavailable "not installed ($missing) and not root, so cannot apt-get install slurm-wlm munge"
    command -v apt-get >/dev/null 2>&1 || unavailable "not installed ($missing) and no apt-get to install slurm-wlm munge"
    APTLOG="$DIR/apt.log"
    # Package scripts must not start the distribution's own daemons (no init system here; and we run our own).
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=300 slurm-wlm munge >>"$APTLOG" 2>&1
    }
    ok=""
    if apt_install; then
        ok=1
    else
        echo "--- install failed; apt-get update, then again" >>"$APTLOG"
        DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=300 >>"$APTLOG" 2>&1 && apt_install && ok=1
    fi
    [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
    [ -n "$ok" ] || unavailable "apt-get install slurm-wlm munge failed: $(tail -n 1 "$APTLOG" 2>/dev/null) (log: $APTLOG)"
    for b in slurmctld slurmd munged sbatch; do
        command -v "$b" >/dev/null 2>&1 || unavailable "$b still missing after apt-get install slurm-wlm munge"
    done
fi

# ---------------------------------------------------------------- helpers
alive() {  # alive PIDFILE NAME: the pid in PIDFILE runs a program called NAME
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n 1; }
registered() {  # slurmd has registered with slurmctld since epoch second $1
    local t
    t=$(scontrol show node "$NODE" 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([0-9T:-]*\).*/\1/p')
    [ -n "$t" ] && t=$(date -d "$t" +%s 2>/dev/null) && [ "$t" -ge "$1" ]
}
wait_idle() {  # up to WAIT_S seconds for the node to be idle (or in use: mix/alloc after an idempotent call)
    local end=$((SECONDS + WAIT_S)) st since=${1:-0}
    while [ $SECONDS -lt $end ]; do
        st=$(node_state)
        case "$st" in
            idle|mix|alloc|comp) [ "$since" = 0 ] || registered "$since" && return 0 ;;
            down*|drain*|drng*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 ;;
        esac
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------- sacct stand-in
# There is no slurmdbd, so the real sacct only says "Slurm accounting storage is disabled"; submitit then never learns
# that a job ended without a result (job.result() waits forever). This sacct answers its query from scontrol.
mkdir -p "$DIR/bin"
cat >"$DIR/bin/sacct" <<'SACCT'
#!/usr/bin/env bash
# sacct stand-in for the test cluster of tests/slurm/start.sh: `sacct -o F1,F2 --parsable2 -j ID [-j ID...]` from
# `scontrol show job` (fields JobID, JobIDRaw, JobName, State, NodeList, ExitCode, Restarts, Partition; others empty).
fields="JobID,State,NodeList"; ids=""; header=1
while [ $# -gt 0 ]; do
    case "$1" in
        -j|--jobs) ids="$ids ${2//,/ }"; shift 2 ;;
        --jobs=*) v=${1#--jobs=}; ids="$ids ${v//,/ }"; shift ;;
        -j*) v=${1#-j}; ids="$ids ${v//,/ }"; shift ;;
        -o|--format) fields=$2; shift 2 ;;
        --format=*) fields=${1#--format=}; shift ;;
        -n|--noheader) header=""; shift ;;
        *) shift ;;
    esac
done
IFS=, read -r -a names <<<"$fields"
[ -n "$header" ] && (IFS='|'; echo "${names[*]}")
for id in $ids; do
    scontrol show job -o "$id" 2>/dev/null | while read -r line; do
        case "$line" in JobId=*) ;; *) continue ;; esac
        get() { printf ' %s\n' "$line" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
        jid=$(get JobId); task=$(get ArrayTaskId)
        [ -n "$task" ] && [ "$task" != N/A ] && jid="$(get ArrayJobId)_$task"
        case "$jid" in *_*-*|*_*,*) jid="${jid%%_*}_[${jid#*_}]" ;; esac
        out=()
        for n in "${names[@]}"; do
            case "${n,,}" in
                jobid) out+=("$jid") ;;
                jobidraw) out+=("$(get JobId)") ;;
                jobname) out+=("$(get JobName)") ;;
                state) out+=("$(get JobState)") ;;
                nodelist) out+=("$(get NodeList)") ;;
                exitcode) out+=("$(get ExitCode)") ;;
                restarts) out+=("$(get Restarts)") ;;
                partition) out+=("$(get Partition)") ;;
                *) out+=("") ;;
            esac
        done
        (IFS='|'; echo "${out[*]}")
    done
done
exit 0
SACCT
chmod 755 "$DIR/bin/sacct"

# ---------------------------------------------------------------- already running for DIR?
if [ -f "$CONF" ] && alive "$DIR/munged.pid" munged && alive "$DIR/slurmctld.pid" slurmctld && alive "$DIR/slurmd.pid" slurmd; then
    NODE=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$CONF")
    if wait_idle; then
        echo "export SLURM_CONF=$CONF"
        echo "export PATH=$DIR/bin:\$PATH  # sacct stand-in (no slurmdbd)"
        exit 0
    fi
    failed "daemons for $DIR run but node $NODE is not idle ($(node_state)); see $DIR/log/slurmctld.log"
fi
# Half-started (some daemons missing): stop the rest and start afresh.
"$(dirname "$0")/stop.sh" "$DIR" >/dev/null 2>&1

# ---------------------------------------------------------------- paths
# Unix sockets (munge's, slurmstepd's in the spool dir) must fit in 108 bytes: long DIRs get a short alias in /tmp.
ROOT="$DIR"
if [ ${#DIR} -gt 50 ]; then
    ROOT="/tmp/slurm-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)"
    ln -sfn "$DIR" "$ROOT" || failed "cannot create the short alias $ROOT for $DIR"
    echo "$ROOT" >"$DIR/alias"
fi
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge" "$DIR/log" || failed "cannot create directories under $DIR"
chmod 755 "$DIR/munge"  # munged wants the socket directory searchable by all

# The node is called localhost: job node lists (SLURM_NODELIST, SLURM_STEP_NODELIST, a DDP rendezvous host taken from
# them) then resolve on any machine, whatever its own host name and /etc/hosts say.
NODE=${SLURM_TEST_NODE:-localhost}
USER_NAME=$(id -un)

# CPUs and memory as slurmd sees them ("NodeName=vm CPUs=2 Boards=1 ... RealMemory=23976")
HW=$(slurmd -C 2>/dev/null | head -n 1)
REAL_CPUS=$(printf '%s' "$HW" | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
MEM=$(printf '%s' "$HW" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
[ -n "$REAL_CPUS" ] || REAL_CPUS=$(nproc 2>/dev/null || echo 1)
[ -n "$MEM" ] || MEM=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
CPUS=${SLURM_TEST_CPUS:-$((REAL_CPUS > 4 ? REAL_CPUS : 4))}

# Two free TCP ports (slurmctld, slurmd) in 10000-18999: below the ephemeral range and below the ports augrun derives
# for a Slurm step's DDP group (20000-39999); stable for a DIR while free.
pick_ports() {
    python3 - "$DIR" <<'EOF' 2>/dev/null
import socket, sys, zlib
base = 10000 + zlib.crc32(sys.argv[1].encode()) % 9000
found = []
for p in list(range(base, 19000)) + list(range(10000, base)):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); s.close()
        s = socket.socket(); s.bind(("0.0.0.0", p))
        found.append(p)
    except OSError:
        pass
    finally:
        s.close()
    if len(found) == 2:
        break
print(*found)
EOF
}
read -r CTLD_PORT SLURMD_PORT <<<"$(pick_ports)"
if [ -z "${SLURMD_PORT:-}" ]; then CTLD_PORT=6817; SLURMD_PORT=6818; fi

MUNGE_SOCKET="$ROOT/munge/munge.socket"

cat >"$CONF" <<EOF
# Written by tests/slurm/start.sh for a throw-away single-node test cluster.
ClusterName=augruntest
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again only this many seconds after it ended (default 120, minimum 5)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1,sched_min_interval=0,default_queue_depth=100
# A job in partition "urgent" preempts (requeues) jobs of "debug": they get their --signal signal (e.g. USR2) at once,
# then, at the first 30-s time-limit check after GraceTime (10 s), SIGCONT+SIGTERM, SIGKILL KillWait later, and requeue.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
JobRequeue=1
KillWait=10
OverTimeLimit=0
InactiveLimit=0
# finished jobs stay visible to squeue/scontrol for an hour (there is no slurmdbd, so no sacct)
MinJobAge=3600
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=60
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=10
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE State=UP OverSubscribe=YES PriorityTier=2 PreemptMode=OFF
EOF

# ---------------------------------------------------------------- munged
KEY="$DIR/munge/munge.key"
if [ ! -s "$KEY" ]; then
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$KEY" --force >/dev/null 2>&1
    fi
    [ -s "$KEY" ] || dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chmod 600 "$KEY"
munged --socket="$MUNGE_SOCKET" --key-file="$KEY" --pid-file="$DIR/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" --force \
    >>"$DIR/log/munged.out" 2>&1 \
    || failed "munged did not start: $(tail -n 1 "$DIR/log/munged.out" "$DIR/log/munged.log" 2>/dev/null | grep -v '^==>' | grep . | tail -n 1)"
end=$((SECONDS + 10))
until [ -S "$MUNGE_SOCKET" ] && alive "$DIR/munged.pid" munged; do
    [ $SECONDS -lt $end ] || failed "munged did not come up; see $DIR/log/munged.log"
    sleep 0.1
done

# ---------------------------------------------------------------- slurmctld, slurmd
slurmctld -i >>"$DIR/log/slurmctld.out" 2>&1 \
    || failed "slurmctld did not start: $(last_error "$DIR/log/slurmctld.out" "$DIR/log/slurmctld.log") (see $DIR/log/)"
started=$(($(date +%s) - 1))
slurmd -N "$NODE" >>"$DIR/log/slurmd.out" 2>&1 \
    || failed "slurmd did not start: $(last_error "$DIR/log/slurmd.out" "$DIR/log/slurmd.log") (see $DIR/log/)"

if ! wait_idle "$started"; then
    st=$(node_state)
    for d in slurmctld slurmd; do
        alive "$DIR/$d.pid" "$d" || failed "$d exited: $(last_error "$DIR/log/$d.log") (see $DIR/log/)"
    done
    failed "node $NODE not idle after ${WAIT_S}s (state: ${st:-no answer}); see $DIR/log/slurmctld.log"
fi
echo "export SLURM_CONF=$CONF"
echo "export PATH=$DIR/bin:\$PATH  # sacct stand-in (no slurmdbd)"
