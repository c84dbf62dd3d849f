#!/usr/bin/env bash
# The test cluster: a single-node SLURM (munged, slurmctld, slurmd) and a private sshd that plays
# the login node ("gateway"), all on this machine and on 127.0.0.1 only.
#
#   bash scripts/cluster.sh start    # install what is missing (apt), write configs, start what is down
#   bash scripts/cluster.sh stop     # cancel every job, stop every daemon this script starts
#   bash scripts/cluster.sh status   # which daemons are up, and sinfo
#   bash scripts/cluster.sh env      # shell exports for the integration tests: eval "$(... env)"
#
# `start` is idempotent: with everything up it only re-checks; a changed slurm.conf or sshd_config
# restarts the daemons concerned. Every daemon is stopped by the pid in its own pid file.
# Files: /etc/slurm/slurm.conf (the default path, so sbatch/squeue need no SLURM_CONF, also over
# ssh); everything else under $METALAB_CLUSTER_DIR (default /tmp/metalab-cluster).
# Must run as root (it installs packages, starts daemons and creates the gateway user).
set -euo pipefail

STATE="${METALAB_CLUSTER_DIR:-/tmp/metalab-cluster}"
SSH_PORT="${METALAB_CLUSTER_SSH_PORT:-2222}"
GW_USER="${METALAB_CLUSTER_USER:-slurmgw}"
GW_ALIAS=testgw
NODE_CPUS=4              # advertised CPUs (config_overrides): several one-CPU jobs at once on 2 cores
MIN_JOB_AGE=3600         # finished jobs stay in `squeue -t all` / `scontrol show job` this long
# SLURM's default; the executor tests start the cluster with a small one to see arrays split into
# chunks (slurmctld reads it only at start: a changed value restarts the daemons, see step 5).
MAX_ARRAY_SIZE="${METALAB_CLUSTER_MAX_ARRAY_SIZE:-1001}"
# Finished jobs stay for MIN_JOB_AGE and each array task is a job record: room for the suite and
# the 10,000-run benchmark (SLURM's default of 10,000 would make sbatch block, retrying).
MAX_JOB_COUNT=100000

SLURM_CONF=/etc/slurm/slurm.conf
SLURM_DIR="$STATE/slurm"
CTLD_PID="$SLURM_DIR/slurmctld.pid"
SLURMD_PID="$SLURM_DIR/slurmd.pid"
MUNGE_PID=/run/munge/munged.pid      # munged's default; clients expect its socket in /run/munge
SSH_DIR="$STATE/ssh"
SSHD_PID="$SSH_DIR/sshd.pid"
CLIENT_KEY="$SSH_DIR/client_ed25519"
KNOWN_HOSTS="$SSH_DIR/known_hosts"
SSH_CONFIG="$SSH_DIR/ssh_config"
HOST=$(hostname -s)

log() { printf '[cluster %(%T)T] %s\n' -1 "$*" >&2; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_all NAME=PIDFILE...: SIGTERM each live daemon at once, wait for all (SIGKILL after 15 s)
stop_all() {
  local spec name pf pid pids=() names=()
  for spec in "$@"; do
    name=${spec%%=*} pf=${spec#*=}
    if alive "$pf"; then
      pid=$(cat "$pf"); log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid"); names+=("$name")
    fi
    rm -f "$pf"
  done
  local i
  for _ in $(seq 1 150); do
    local left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      log "${names[$i]} (pid ${pids[$i]}) still alive: SIGKILL"; kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
}

print_env() {
  cat <<EOF
export METALAB_TEST_SLURM=1
export METALAB_TEST_SSH_HOST=$GW_ALIAS
export METALAB_TEST_SSH_USER=$GW_USER
export METALAB_TEST_SSH_PORT=$SSH_PORT
export METALAB_TEST_SSH_KEY=$CLIENT_KEY
export METALAB_TEST_SSH_CONFIG=$SSH_CONFIG
export METALAB_TEST_KNOWN_HOSTS=$KNOWN_HOSTS
EOF
}

cancel_jobs() {
  alive "$CTLD_PID" || return 0
  local jobs
  jobs=$(squeue -h -o '%A' 2>/dev/null | tr '\n' ' ' || true)
  [ -n "${jobs// /}" ] || return 0
  log "cancelling jobs: $jobs"
  # shellcheck disable=SC2086
  scancel $jobs 2>/dev/null || true
  for _ in $(seq 1 100); do
    [ -z "$(squeue -h -t PD,R,CG,S -o %A 2>/dev/null)" ] && break
    sleep 0.1
  done
}

do_stop() {
  cancel_jobs
  stop_all "sshd=$SSHD_PID" "slurmd=$SLURMD_PID" "slurmctld=$CTLD_PID"
  stop_all "munged=$MUNGE_PID"   # last: slurmd and slurmctld talk to it while they shut down
}

do_status() {
  local spec rc=0
  for spec in "munged=$MUNGE_PID" "slurmctld=$CTLD_PID" "slurmd=$SLURMD_PID" "sshd=$SSHD_PID"; do
    if alive "${spec#*=}"; then echo "${spec%%=*} up (pid $(cat "${spec#*=}"))"; else echo "${spec%%=*} down"; rc=3; fi
  done
  if alive "$CTLD_PID"; then sinfo; fi
  return "$rc"
}

case "${1:-}" in
  env) print_env; exit 0 ;;
  status) do_status; exit $? ;;
  stop) [ "$(id -u)" = 0 ] || die "run as root"; do_stop; exit 0 ;;
  start) ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (it installs packages, starts daemons and creates the user $GW_USER)"
t0=$(date +%s.%N)

# -- 1. packages ---------------------------------------------------------------------------------
missing=()
for pkg in slurm-wlm munge openssh-server openssh-client; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Never let a package start its own daemon (the system sshd would listen on 0.0.0.0:22).
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# -- 2. the hostname must resolve to loopback (slurm binds and advertises it) ---------------------
addr=$(getent ahostsv4 "$HOST" | awk 'NR==1 {print $1}')
if [ -z "$addr" ]; then
  log "$HOST does not resolve: adding '127.0.0.1 $HOST' to /etc/hosts"
  echo "127.0.0.1 $HOST" >>/etc/hosts
  addr=127.0.0.1
fi
case "$addr" in 127.*) ;; *) die "hostname $HOST resolves to $addr, not loopback; put '127.0.0.1 $HOST' first in /etc/hosts" ;; esac

# -- 3. munge -------------------------------------------------------------------------------------
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge   # /run/munge: no systemd-tmpfiles here
if [ ! -s /etc/munge/munge.key ]; then
  log "creating the munge key"
  mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 700 /etc/munge /var/log/munge; chmod 711 /var/lib/munge; chmod 755 /run/munge; chmod 400 /etc/munge/munge.key
if ! alive "$MUNGE_PID"; then
  rm -f "$MUNGE_PID"
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force   # --force: a stale socket from a killed munged is fine
  for _ in $(seq 1 50); do alive "$MUNGE_PID" && break; sleep 0.05; done
fi
munge -n | unmunge >/dev/null || die "munge self-test failed (see /var/log/munge/munged.log)"

# -- 4. slurm.conf --------------------------------------------------------------------------------
mkdir -p /etc/slurm "$SLURM_DIR/state" "$SLURM_DIR/spool" "$SLURM_DIR/log"
chmod 755 "$STATE" "$SLURM_DIR"
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)   # under the real figure, or the node is INVALID
newconf=$(mktemp)
cat >"$newconf" <<EOF
# written by metalab scripts/cluster.sh: one node, loopback only, no cgroups
ClusterName=metalab-test
SlurmctldHost=$HOST(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=512
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=$MAX_JOB_COUNT
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.log
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$NODE_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu   Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=debug Nodes=$HOST Default=NO  MaxTime=60       State=UP
EOF
slurm_changed=0
if ! cmp -s "$newconf" "$SLURM_CONF"; then
  install -m 644 "$newconf" "$SLURM_CONF"; slurm_changed=1; log "wrote $SLURM_CONF"
fi
rm -f "$newconf"

# -- 5. slurmctld, slurmd (node hardware is not re-read on reconfigure: a changed conf restarts both)
if [ "$slurm_changed" = 1 ] && { alive "$CTLD_PID" || alive "$SLURMD_PID"; }; then
  log "slurm.conf changed: restarting slurmctld and slurmd"
  stop_all "slurmd=$SLURMD_PID" "slurmctld=$CTLD_PID"
fi
if ! alive "$CTLD_PID"; then
  rm -f "$CTLD_PID"; log "starting slurmctld"
  /usr/sbin/slurmctld -i   # -i: ignore state saved under another config; forks itself
fi
for _ in $(seq 1 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
scontrol ping 2>/dev/null | grep -q 'is UP' || { tail -n 20 "$SLURM_DIR/log/slurmctld.log" >&2; die "slurmctld did not come up"; }
if ! alive "$SLURMD_PID"; then
  rm -f "$SLURMD_PID"; log "starting slurmd"
  /usr/sbin/slurmd
fi
state=""
for _ in $(seq 1 150); do
  state=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -n1)
  case "$state" in
    idle*|mixed*|allocated*|completing*) break ;;
    down*|drain*|fail*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.1
done
case "$state" in idle*|mixed*|allocated*|completing*) ;; *)
  scontrol show node "$HOST" >&2; tail -n 20 "$SLURM_DIR/log/slurmd.log" >&2; die "node $HOST not ready (state '$state')" ;;
esac

# -- 6. the gateway: user, keys, private sshd on 127.0.0.1:$SSH_PORT ------------------------------
mkdir -p /run/sshd && chmod 755 /run/sshd   # privilege separation dir; no systemd-tmpfiles here
if ! id "$GW_USER" >/dev/null 2>&1; then
  log "creating user $GW_USER"
  useradd --create-home --shell /bin/bash "$GW_USER"
fi
# '*', not '!': with UsePAM no, sshd refuses even key logins to a locked account
[ "$(getent shadow "$GW_USER" | cut -d: -f2)" = '*' ] || usermod -p '*' "$GW_USER"
gw_home=$(getent passwd "$GW_USER" | cut -d: -f6)
gw_group=$(id -gn "$GW_USER")
mkdir -p "$gw_home"; chown "$GW_USER:$gw_group" "$gw_home"; chmod 755 "$gw_home"   # StrictModes
mkdir -p "$SSH_DIR"; chmod 755 "$SSH_DIR"
[ -s "$SSH_DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C metalab-testgw-host -f "$SSH_DIR/host_ed25519"
[ -s "$CLIENT_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C metalab-testgw-client -f "$CLIENT_KEY"
chmod 600 "$SSH_DIR/host_ed25519" "$CLIENT_KEY"
install -d -m 700 -o "$GW_USER" -g "$gw_group" "$gw_home/.ssh"
auth_keys="$gw_home/.ssh/authorized_keys"
touch "$auth_keys"
grep -qxF "$(cat "$CLIENT_KEY.pub")" "$auth_keys" || cat "$CLIENT_KEY.pub" >>"$auth_keys"
chown "$GW_USER:$gw_group" "$auth_keys"; chmod 600 "$auth_keys"
# ssh and paramiko look a non-22 port up as "[host]:port"
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$SSH_DIR/host_ed25519.pub")" >"$KNOWN_HOSTS"
chmod 644 "$KNOWN_HOSTS"

newconf=$(mktemp)
cat >"$newconf" <<EOF
# written by metalab scripts/cluster.sh: the test gateway, loopback only, keys only
Port $SSH_PORT
ListenAddress 127.0.0.1
AddressFamily inet
HostKey $SSH_DIR/host_ed25519
PidFile $SSHD_PID
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
PermitRootLogin no
AllowUsers $GW_USER
StrictModes yes
AllowTcpForwarding yes
GatewayPorts no
PermitOpen 127.0.0.1:*
PermitListen 127.0.0.1:*
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
UseDNS no
PrintMotd no
MaxStartups 50:30:100
MaxSessions 50
ClientAliveInterval 30
Subsystem sftp internal-sftp
EOF
sshd_changed=0
if ! cmp -s "$newconf" "$SSH_DIR/sshd_config"; then install -m 644 "$newconf" "$SSH_DIR/sshd_config"; sshd_changed=1; fi
rm -f "$newconf"
/usr/sbin/sshd -t -f "$SSH_DIR/sshd_config"

cat >"$SSH_CONFIG" <<EOF
# written by metalab scripts/cluster.sh
Host $GW_ALIAS
  HostName 127.0.0.1
  Port $SSH_PORT
  User $GW_USER
  IdentityFile $CLIENT_KEY
  IdentitiesOnly yes
  UserKnownHostsFile $KNOWN_HOSTS
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
  ExitOnForwardFailure yes
  ServerAliveInterval 15
EOF
chmod 644 "$SSH_CONFIG"

if [ "$sshd_changed" = 1 ] && alive "$SSHD_PID"; then log "sshd_config changed: restarting sshd"; stop_all "sshd=$SSHD_PID"; fi
if ! alive "$SSHD_PID"; then
  rm -f "$SSHD_PID"; log "starting sshd on 127.0.0.1:$SSH_PORT"
  /usr/sbin/sshd -f "$SSH_DIR/sshd_config" -E "$SSH_DIR/sshd.log"
  for _ in $(seq 1 50); do alive "$SSHD_PID" && break; sleep 0.05; done
  alive "$SSHD_PID" || { tail "$SSH_DIR/sshd.log" >&2; die "sshd did not start"; }
fi
who=$(ssh -F "$SSH_CONFIG" "$GW_ALIAS" id -un) || { tail "$SSH_DIR/sshd.log" >&2; die "key login to $GW_ALIAS failed"; }
[ "$who" = "$GW_USER" ] || die "ssh $GW_ALIAS logged in as '$who', expected $GW_USER"

log "ready in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}') s: node $HOST $state," \
  "partitions $(sinfo -h -o %P | tr '\n' ' ')| ssh -F $SSH_CONFIG $GW_ALIAS ($GW_USER)"
