#!/usr/bin/env bash
# The multi-host test cluster, built from Linux network, UTS and mount namespaces on this machine.
#
#   host   address                      runs                          sees
#   login  10.97.0.10, 10.97.1.1 (ws)   munged, slurmctld, sshd :22   the shared filesystem
#   cn1    10.97.0.11                   munged, slurmd                the shared filesystem
#   cn2    10.97.0.12                   munged, slurmd                the shared filesystem
#   ws     10.97.1.2                    nothing (the researcher's)    login's sshd only; not the shared filesystem
#
#   bash scripts/cluster.sh start          # build what is missing (apt-installs packages), start what is down
#   bash scripts/cluster.sh stop           # cancel every job; stop every daemon by pid; remove namespaces,
#                                          # veths, routes and the state dir (only the keys stay)
#   bash scripts/cluster.sh status         # each host's daemons, sinfo (exit 3 when not up)
#   bash scripts/cluster.sh env            # exports for the integration tests: eval "$(... env)"
#   bash scripts/cluster.sh on HOST CMD..  # run CMD on login, cn1, cn2 or ws
#
# Network: the addresses exist only inside namespaces made here. Blackhole routes for both ranges
# go into the root namespace before any address is assigned (so no packet for them can leave the
# machine), and the root namespace gets no link and no address of its own: nothing is sent to the
# hosts from it; `on HOST` enters a host instead. The cluster net is a bridge in its own namespace;
# ws has one link, to login, which does not forward.
# Each host is a "holder" process (sleep) owning a UTS namespace (its hostname) and a mount
# namespace where /etc/hosts, /etc/slurm, /run/munge and /tmp are the host's own (bind mounts from
# the state dir). The rest of the filesystem is shared, like NFS: $STATE/shared is the cluster's
# shared filesystem (file_roots go there) and is hidden on ws under an empty read-only tmpfs;
# $STATE/workstation is the researcher's (their projects) and is hidden likewise on the cluster.
# On ws, /root is a home of its own (~/.ssh/config names the gateway `login`). The repository, its
# venv and their interpreter stay visible on every host when they live under /tmp or /root.
# Hosts are entered with nsenter into the holder's namespaces, not `ip netns exec`, which would
# remount /sys. Every daemon is stopped by the pid in its pid file, then whatever is left in a
# host's network namespace. Must run as root.
set -euo pipefail

STATE="${METALAB_CLUSTER_DIR:-/var/tmp/metalab-cluster}"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P=mlc                                   # prefix of the namespaces
NET=10.97.0 WNET=10.97.1
HOSTS=(login cn1 cn2 ws)
CLUSTER_HOSTS=(login cn1 cn2)
NODES=(cn1 cn2)
declare -A ADDR=([login]=$NET.10 [cn1]=$NET.11 [cn2]=$NET.12 [ws]=$WNET.2)
GATEWAY_ON_WS=$WNET.1
GW_USER="${METALAB_CLUSTER_USER:-slurmgw}"
NODE_CPUS=4             # advertised per node (config_overrides): several one-CPU jobs at once on 2 cores
NODE_MEM_MB=4000
MIN_JOB_AGE=3600        # finished jobs stay in `squeue -t all` this long
# SLURM's default; the executor tests start the cluster with a small one to see arrays split into
# chunks (slurmctld reads it at start: a changed value restarts the SLURM daemons).
MAX_ARRAY_SIZE="${METALAB_CLUSTER_MAX_ARRAY_SIZE:-1001}"
MAX_JOB_COUNT=100000    # room for the suite's and the benchmarks' finished array tasks

KEYS="$STATE/keys"      # munge key, ssh host and client keys: kept by `stop`, so a restart is quick
SLURM_DIR="$STATE/slurm"
SSH_DIR="$STATE/ssh"
SHARED="$STATE/shared"
WORKSTATION="$STATE/workstation"
WS_HOME="$STATE/hosts/ws/home"
CTLD_PID="$SLURM_DIR/slurmctld.pid"
SSHD_PID="$SSH_DIR/sshd.pid"
INFO="$STATE/cluster.json"

log() { printf '[cluster %(%T)T] %s\n' -1 "$*" >&2; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
holder_file() { echo "$STATE/hosts/$1/holder.pid"; }
munged_pid() { echo "$STATE/hosts/$1/run-munge/munged.pid"; }
slurmd_pid() { echo "$SLURM_DIR/slurmd-$1.pid"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}'; }

on() {  # on HOST CMD...: run CMD in HOST's namespaces, in the current directory when it exists there
  local host=$1; shift
  local pf; pf=$(holder_file "$host")
  alive "$pf" || die "host $host is not up (bash scripts/cluster.sh start)"
  nsenter -t "$(cat "$pf")" -n -u -m -- sh -c 'cd "$1" 2>/dev/null || cd /; shift; exec "$@"' sh "$PWD" "$@"
}

holders_up() {
  local h
  for h in "${HOSTS[@]}"; do alive "$(holder_file "$h")" && [ -e "/run/netns/$P-$h" ] || return 1; done
}

# stop_pids NAME=PIDFILE...: SIGTERM every live one at once, wait for all (SIGKILL after 10 s)
stop_pids() {
  local spec pf pid pids=()
  for spec in "$@"; do
    pf=${spec#*=}
    if alive "$pf"; then pid=$(cat "$pf"); kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    rm -f "$pf"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  local left
  for _ in $(seq 100); do
    left=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  log "still alive after 10 s, SIGKILL: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

namespace_pids() {  # every process in the hosts' network namespaces
  local h
  for h in "${HOSTS[@]}"; do
    [ -e "/run/netns/$P-$h" ] && ip netns pids "$P-$h" 2>/dev/null | tr '\n' ' '
  done
  return 0
}

# Everything still running in a host's network namespace (job steps, a services job's servers):
# SIGTERM, then SIGKILL what is left after 3 s.
kill_namespace_processes() {
  local pids
  pids=$(namespace_pids)
  [ -n "${pids// /}" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 30); do
    pids=$(namespace_pids)
    [ -n "${pids// /}" ] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  sleep 0.1
}

cancel_jobs() {
  alive "$CTLD_PID" && alive "$(holder_file login)" || return 0
  local jobs
  jobs=$(on login squeue -h -t PD,R,CG,S -o %A 2>/dev/null | tr '\n' ' ' || true)
  [ -n "${jobs// /}" ] || return 0
  log "cancelling jobs: $jobs"
  # shellcheck disable=SC2086
  on login scancel $jobs 2>/dev/null || true
  for _ in $(seq 150); do
    [ -z "$(on login squeue -h -t PD,R,CG,S -o %A 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  log "jobs still in the queue after 15 s: $(on login squeue -h -o '%A %T' | tr '\n' ' ')"
}

do_stop() {
  local t0; t0=$(date +%s.%N)
  cancel_jobs
  local specs=("sshd=$SSHD_PID" "slurmctld=$CTLD_PID") n h
  for n in "${NODES[@]}"; do specs+=("slurmd-$n=$(slurmd_pid "$n")"); done
  stop_pids "${specs[@]}"
  specs=(); for h in "${CLUSTER_HOSTS[@]}"; do specs+=("munged-$h=$(munged_pid "$h")"); done
  stop_pids "${specs[@]}"   # last: the SLURM daemons talk to munged while they shut down
  kill_namespace_processes
  specs=(); for h in "${HOSTS[@]}"; do specs+=("holder-$h=$(holder_file "$h")"); done
  stop_pids "${specs[@]}"
  for h in "${HOSTS[@]}" sw; do ip netns del "$P-$h" 2>/dev/null || true; done   # their veths go with them
  ip route del blackhole "$NET.0/24" 2>/dev/null || true
  ip route del blackhole "$WNET.0/24" 2>/dev/null || true
  # Every mount was made inside a holder's private mount namespace, gone with it: these are plain dirs.
  if [ -d "$STATE" ]; then
    find "$STATE" -mindepth 1 -maxdepth 1 ! -name keys -exec rm -rf {} +
  fi
  local left; left=$(ip netns list 2>/dev/null | grep -c "^$P-" || true)
  log "stopped in $(elapsed "$t0") s; namespaces left: $left"
}

do_status() {
  local rc=0 h spec
  if ! holders_up; then echo "cluster down"; return 3; fi
  local specs=("login:munged=$(munged_pid login)" "login:slurmctld=$CTLD_PID" "login:sshd=$SSHD_PID")
  for h in "${NODES[@]}"; do specs+=("$h:munged=$(munged_pid "$h")" "$h:slurmd=$(slurmd_pid "$h")"); done
  for spec in "${specs[@]}"; do
    if alive "${spec#*=}"; then echo "${spec%%=*} up (pid $(cat "${spec#*=}"))"; else echo "${spec%%=*} down"; rc=3; fi
  done
  [ "$rc" = 0 ] && on login sinfo -N
  return "$rc"
}

print_env() {
  echo "export METALAB_TEST_CLUSTER=$INFO"
}

# -- start ------------------------------------------------------------------------------------

install_packages() {
  local missing=() pkg
  for pkg in slurm-wlm munge openssh-server openssh-client iproute2 util-linux; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Never let a package start its own daemon (the system sshd would listen on 0.0.0.0:22).
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

gateway_user() {
  if ! id "$GW_USER" >/dev/null 2>&1; then
    log "creating user $GW_USER"
    useradd --create-home --shell /bin/bash "$GW_USER"
  fi
  # '*', not '!': with UsePAM no, sshd refuses even key logins to a locked account
  [ "$(getent shadow "$GW_USER" | cut -d: -f2)" = '*' ] || usermod -p '*' "$GW_USER"
}

keys() {
  mkdir -p "$KEYS"; chmod 755 "$KEYS"   # munged (user munge) reads its key here
  [ -s "$KEYS/munge.key" ] || mungekey --create --keyfile="$KEYS/munge.key" --force
  chown munge:munge "$KEYS/munge.key"; chmod 400 "$KEYS/munge.key"
  [ -s "$KEYS/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C metalab-cluster-login -f "$KEYS/host_ed25519"
  [ -s "$KEYS/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C metalab-cluster-ws -f "$KEYS/client_ed25519"
  chmod 600 "$KEYS/host_ed25519" "$KEYS/client_ed25519"
}

network() {
  # Before any address exists: packets for these ranges never leave the machine.
  ip route replace blackhole "$NET.0/24"
  ip route replace blackhole "$WNET.0/24"
  ip netns add "$P-sw"
  ip -n "$P-sw" link set lo up
  ip -n "$P-sw" link add br0 type bridge
  ip -n "$P-sw" link set br0 up
  local h
  for h in "${HOSTS[@]}"; do ip netns add "$P-$h"; ip -n "$P-$h" link set lo up; done
  for h in "${CLUSTER_HOSTS[@]}"; do   # created inside the host's namespace: never a link in the root one
    ip -n "$P-$h" link add eth0 type veth peer name "$h" netns "$P-sw"
    ip -n "$P-sw" link set "$h" master br0 up
    ip -n "$P-$h" addr add "${ADDR[$h]}/24" dev eth0
    ip -n "$P-$h" link set eth0 up
  done
  ip -n "$P-ws" link add eth0 type veth peer name eth1 netns "$P-login"
  ip -n "$P-ws" addr add "${ADDR[ws]}/24" dev eth0; ip -n "$P-ws" link set eth0 up
  ip -n "$P-login" addr add "$GATEWAY_ON_WS/24" dev eth1; ip -n "$P-login" link set eth1 up
  nsenter --net="/run/netns/$P-login" sysctl -qw net.ipv4.ip_forward=0   # ws reaches sshd, nothing beyond
}

host_files() {
  local h
  for h in "${HOSTS[@]}"; do
    mkdir -p "$STATE/hosts/$h/run-munge" "$STATE/hosts/$h/munge" "$STATE/hosts/$h/tmp" "$STATE/hosts/$h/hidden"
    chmod 1777 "$STATE/hosts/$h/tmp"
  done
  for h in "${CLUSTER_HOSTS[@]}"; do
    printf '127.0.0.1 localhost\n%s login\n%s cn1\n%s cn2\n' "${ADDR[login]}" "${ADDR[cn1]}" "${ADDR[cn2]}" >"$STATE/hosts/$h/hosts"
  done
  printf '127.0.0.1 localhost\n%s ws\n%s login\n' "${ADDR[ws]}" "$GATEWAY_ON_WS" >"$STATE/hosts/ws/hosts"
  chmod 644 "$STATE"/hosts/*/hosts
  mkdir -p "$STATE/hosts/ws/etc-slurm"   # a workstation has no SLURM config
  mkdir -p "$SHARED" "$WORKSTATION"; chmod 755 "$SHARED" "$WORKSTATION"
  # the workstation's home: ~/.ssh names the gateway; the researcher's ~/.metalab lives here too
  mkdir -p "$WS_HOME/.ssh"; chmod 700 "$WS_HOME" "$WS_HOME/.ssh"
  install -m 600 "$KEYS/client_ed25519" "$WS_HOME/.ssh/id_ed25519"
  install -m 644 "$KEYS/client_ed25519.pub" "$WS_HOME/.ssh/id_ed25519.pub"
  echo "login,$GATEWAY_ON_WS $(cut -d' ' -f1,2 "$KEYS/host_ed25519.pub")" >"$WS_HOME/.ssh/known_hosts"
  printf 'Host login\n  User %s\n  IdentityFile ~/.ssh/id_ed25519\n  IdentitiesOnly yes\n  BatchMode yes\n  ConnectTimeout 10\n' \
    "$GW_USER" >"$WS_HOME/.ssh/config"
  chmod 600 "$WS_HOME/.ssh/config" "$WS_HOME/.ssh/known_hosts"
}

# What every host must still see where it has a folder of its own (/tmp, and /root on ws): the
# repository, its venv and the interpreter that venv was made from (pyenv keeps it under /root).
kept_paths() {
  local venv="${METALAB_VENV:-$REPO/.venv}"
  echo "$REPO"
  if [ -x "$venv/bin/python" ]; then
    echo "$venv"
    "$venv/bin/python" -c 'import sys; print(sys.base_prefix)'
  fi
}

start_holder() {  # a sleep that owns HOST's UTS and mount namespaces, inside its network namespace
  local h=$1 pf keep=(); pf=$(holder_file "$h")
  mapfile -t keep < <(kept_paths)
  rm -f "$pf"
  setsid nsenter --net="/run/netns/$P-$h" unshare --uts --mount --propagation private --fork sh -c '
    set -e; h=$1 S=$2 shared=$3 ws=$4; shift 4
    # cover DIR SOURCE KEPT...: DIR shows SOURCE, except the kept paths under DIR, which stay as they were
    cover() {
      dir=$1 real="$S/hosts/$h/real$(echo "$1" | tr / _)"; mkdir -p "$real"
      mount --bind "$dir" "$real"; mount --bind "$2" "$dir"; shift 2
      for keep in "$@"; do
        case "$keep" in "$dir"/*) rel=${keep#"$dir"/}; mkdir -p "$dir/$rel"; mount --bind "$real/$rel" "$dir/$rel" ;; esac
      done
    }
    hostname "$h"
    mount --bind "$S/hosts/$h/hosts" /etc/hosts
    mount --bind "$S/hosts/$h/run-munge" /run/munge
    cover /tmp "$S/hosts/$h/tmp" "$@"
    if [ "$h" = ws ]; then
      mount --bind "$S/hosts/ws/etc-slurm" /etc/slurm
      mount -t tmpfs -o ro,size=16k,mode=755 hidden "$shared"
      cover /root "$S/hosts/ws/home" "$@"
    else
      mount --bind "$S/etc-slurm" /etc/slurm
      mount -t tmpfs -o ro,size=16k,mode=755 hidden "$ws"
    fi
    echo $$ >"$S/hosts/$h/holder.pid"
    exec sleep infinity' sh "$h" "$STATE" "$SHARED" "$WORKSTATION" "${keep[@]}" </dev/null >"$STATE/hosts/$h/holder.log" 2>&1 &
}

slurm_conf() {
  local nodes="" n
  for n in "${NODES[@]}"; do
    nodes+="NodeName=$n NodeAddr=${ADDR[$n]} NodeHostname=$n CPUs=$NODE_CPUS Boards=1 SocketsPerBoard=1 "
    nodes+="CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=$NODE_MEM_MB State=UNKNOWN"$'\n'
  done
  cat <<EOF
# written by metalab scripts/cluster.sh: login (controller) and two compute nodes, in namespaces
ClusterName=metalab-test
SlurmctldHost=login(${ADDR[login]})
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
SrunPortRange=60001-60100
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory,CR_LLN
SlurmdParameters=config_overrides
DefMemPerCPU=256
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=$MAX_JOB_COUNT
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool-%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURM_DIR/slurmd-%n.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd-%n.log
${nodes}PartitionName=cpu   Nodes=cn1,cn2 Default=YES MaxTime=INFINITE State=UP
PartitionName=debug Nodes=cn1,cn2 Default=NO  MaxTime=60       State=UP
EOF
}

sshd_config() {
  cat <<EOF
# written by metalab scripts/cluster.sh: the gateway on login, keys only, one user
Port 22
ListenAddress ${ADDR[login]}
ListenAddress $GATEWAY_ON_WS
HostKey $KEYS/host_ed25519
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
AllowTcpForwarding local
GatewayPorts no
PermitOpen ${ADDR[cn1]}:* ${ADDR[cn2]}:* cn1:* cn2:*
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
}

authorize_client() {
  local home group
  home=$(getent passwd "$GW_USER" | cut -d: -f6); group=$(id -gn "$GW_USER")
  mkdir -p "$home"; chown "$GW_USER:$group" "$home"; chmod 755 "$home"   # StrictModes
  install -d -m 700 -o "$GW_USER" -g "$group" "$home/.ssh"
  local keys="$home/.ssh/authorized_keys"
  touch "$keys"
  grep -qxF "$(cat "$KEYS/client_ed25519.pub")" "$keys" || cat "$KEYS/client_ed25519.pub" >>"$keys"
  chown "$GW_USER:$group" "$keys"; chmod 600 "$keys"
}

wait_for() {  # wait_for SECONDS WHAT CMD...: until CMD succeeds
  local seconds=$1 what=$2; shift 2
  local i
  for i in $(seq "$((seconds * 20))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  die "$what did not come up within $seconds s"
}

nodes_idle() {
  local states; states=$(on login sinfo -h -N -p cpu -o '%T' 2>/dev/null) || return 1
  [ "$(grep -cE '^(idle|mixed|allocated|completing)' <<<"$states")" = "${#NODES[@]}" ]
}

ctld_up() { on login scontrol ping | grep -q 'is UP'; }
ws_reaches_gateway() { on ws ssh login true; }

start_munged() {
  local h=$1
  chown munge:munge "$STATE/hosts/$h/run-munge" "$STATE/hosts/$h/munge"
  chmod 755 "$STATE/hosts/$h/run-munge"; chmod 700 "$STATE/hosts/$h/munge"
  on "$h" runuser -u munge -- /usr/sbin/munged --force --key-file="$KEYS/munge.key" \
    --seed-file="$STATE/hosts/$h/munge/munged.seed" --log-file="$STATE/hosts/$h/munge/munged.log" \
    --pid-file=/run/munge/munged.pid
}

do_start() {
  local t0; t0=$(date +%s.%N)
  install_packages
  gateway_user
  keys
  # A leftover /etc/slurm/slurm.conf of the single-host cluster this script used to start.
  if grep -qs '^# written by metalab scripts/cluster.sh: one node' /etc/slurm/slurm.conf; then rm -f /etc/slurm/slurm.conf; fi
  mkdir -p /etc/slurm /run/munge /run/sshd; chmod 755 /run/sshd
  if ! holders_up; then
    if [ -e "$STATE/hosts" ] || ip netns list 2>/dev/null | grep -q "^$P-"; then
      log "cleaning up what a previous cluster left"; do_stop
    fi
    mkdir -p "$STATE/etc-slurm" "$SLURM_DIR/state" "$SLURM_DIR/log" "$SSH_DIR"
    chmod 755 "$STATE" "$SLURM_DIR"
    for n in "${NODES[@]}"; do mkdir -p "$SLURM_DIR/spool-$n"; done   # slurmd does not create spool-%n
    host_files
    network
    local h
    for h in "${HOSTS[@]}"; do start_holder "$h"; done
    for h in "${HOSTS[@]}"; do wait_for 5 "host $h" test -s "$(holder_file "$h")"; done
  fi
  # slurm.conf: a change (MaxArraySize) restarts the SLURM daemons; node hardware is not re-read on reconfigure
  local conf; conf=$(mktemp)
  slurm_conf >"$conf"
  if ! cmp -s "$conf" "$STATE/etc-slurm/slurm.conf"; then
    install -m 644 "$conf" "$STATE/etc-slurm/slurm.conf"
    local specs=("slurmctld=$CTLD_PID") n
    for n in "${NODES[@]}"; do specs+=("slurmd-$n=$(slurmd_pid "$n")"); done
    if alive "$CTLD_PID"; then log "slurm.conf changed: restarting the SLURM daemons"; fi
    stop_pids "${specs[@]}"
  fi
  rm -f "$conf"
  for h in "${CLUSTER_HOSTS[@]}"; do alive "$(munged_pid "$h")" || start_munged "$h"; done
  for h in "${CLUSTER_HOSTS[@]}"; do wait_for 5 "munged on $h" alive "$(munged_pid "$h")"; done
  if ! alive "$CTLD_PID"; then on login /usr/sbin/slurmctld -i; fi
  # slurmd retries until the controller answers: start them at once
  for n in "${NODES[@]}"; do alive "$(slurmd_pid "$n")" || on "$n" /usr/sbin/slurmd; done
  # the gateway, meanwhile
  authorize_client
  local sconf; sconf=$(mktemp)
  sshd_config >"$sconf"
  if ! cmp -s "$sconf" "$SSH_DIR/sshd_config"; then install -m 644 "$sconf" "$SSH_DIR/sshd_config"; stop_pids "sshd=$SSHD_PID"; fi
  rm -f "$sconf"
  /usr/sbin/sshd -t -f "$SSH_DIR/sshd_config"
  alive "$SSHD_PID" || on login /usr/sbin/sshd -f "$SSH_DIR/sshd_config" -E "$SSH_DIR/sshd.log"
  wait_for 10 slurmctld ctld_up
  for _ in $(seq 200); do
    nodes_idle && break
    on login scontrol update NodeName=cn1,cn2 State=RESUME >/dev/null 2>&1 || true
    sleep 0.05
  done
  nodes_idle || { on login sinfo -N >&2; tail -n 5 "$SLURM_DIR"/log/slurmd-*.log >&2; die "nodes not idle"; }
  wait_for 10 "ssh from ws to login" ws_reaches_gateway
  write_info
  log "ready in $(elapsed "$t0") s: $(on login sinfo -h -N -o '%N %T' | tr '\n' ' ')| ws: ssh login ($GW_USER)"
}

write_info() {
  local holders="" h
  for h in "${HOSTS[@]}"; do holders+="\"$h\": {\"address\": \"${ADDR[$h]}\", \"holder\": $(cat "$(holder_file "$h")")}, "; done
  cat >"$INFO.tmp" <<EOF
{
  "state_dir": "$STATE",
  "hosts": {${holders%, }},
  "gateway": "login",
  "gateway_address_from_ws": "$GATEWAY_ON_WS",
  "gateway_user": "$GW_USER",
  "nodes": ["cn1", "cn2"],
  "partition": "cpu",
  "shared": "$SHARED",
  "workstation": "$WORKSTATION",
  "ws_home": "$WS_HOME",
  "ws_home_on_ws": "/root",
  "max_array_size": $MAX_ARRAY_SIZE,
  "slurm_log_dir": "$SLURM_DIR/log"
}
EOF
  chmod 644 "$INFO.tmp"; mv "$INFO.tmp" "$INFO"
}

case "${1:-}" in
  env) print_env; exit 0 ;;
  status) do_status; exit $? ;;
  on) shift; [ $# -ge 2 ] || die "usage: $0 on HOST CMD..."; on "$@"; exit $? ;;
  stop) [ "$(id -u)" = 0 ] || die "run as root"; do_stop; exit 0 ;;
  start) [ "$(id -u)" = 0 ] || die "run as root (it installs packages, makes namespaces and starts daemons)" ;;
  *) echo "usage: $0 start|stop|status|env|on HOST CMD..." >&2; exit 2 ;;
esac
# A failed or interrupted start leaves nothing running.
started=0
trap '[ "$started" = 1 ] || { log "start did not finish; stopping what it started"; do_stop; }' EXIT
trap 'exit 130' INT TERM HUP
do_start
started=1
