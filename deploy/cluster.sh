#!/usr/bin/env bash
# A local cluster for wasmeca's failover tests: 3 RabbitMQ nodes, 3 Consul servers and optionally
# N `wasmeca serve` hosts, all on this one machine, on 127.0.0.1 only, each with its own ports and
# its own folder under the cluster dir. Nothing outside the cluster dir is written; the machine's
# own RabbitMQ node (rabbit@localhost, 5672/25672, epmd 4369) and its files are never touched.
#
#   cluster.sh up [--hosts N] [-- WASMECA_ARGS...]
#       Starts a fresh cluster (old node data under the cluster dir is wiped first) and waits
#       until `cluster_status` lists 3 running RabbitMQ nodes and Consul has a leader and 3 raft
#       peers; then starts N hosts (default 0) as `$WASMECA_BIN serve WASMECA_ARGS...`, e.g.
#           cluster.sh up --hosts 3 -- --amqp --events target/demo
#       Prints the `env` lines on stdout and each phase's time on stderr. If the cluster is up
#       already it is reused (missing hosts 1..N are started); if it is partly up, or a port is
#       taken, `up` fails and says why.
#   cluster.sh down [--kill]
#       Stops every process this cluster dir started, by pid (SIGTERM, SIGKILL after
#       CLUSTER_STOP_TIMEOUT s; --kill: SIGKILL at once). Idempotent; fine after a partial `up`.
#       Logs and data stay until the next `up` (or `clean`).
#   cluster.sh status          each process, its pid, ports and whether it is alive
#   cluster.sh env             shell lines for tests: CLUSTER_DIR=, AMQP_URLS= (comma list),
#                              AMQP_URL_<i>=, RABBIT_NODE_<i>=, CONSUL_HTTP_ADDRS=,
#                              CONSUL_HTTP_ADDR_<i>=, WASMECA_REST_<i>=, WASMECA_HTTP_<i>=, ...
#   cluster.sh kill-rabbit N   SIGKILL of node N's beam.smp (only that process)
#   cluster.sh restart-rabbit N  starts node N again on its data; it rejoins the cluster by itself
#   cluster.sh queue-leader QUEUE [--vhost V]   prints 1..3: the node holding QUEUE's leader
#                              (`rabbitmqctl list_queues name leader`; for a classic queue the
#                              node of its process)
#   cluster.sh ctl N ARGS...   rabbitmqctl ARGS against node N (right cookie/epmd), e.g.
#                              cluster.sh ctl 1 cluster_status; likewise `diagnostics N ARGS...`
#                              (rabbitmq-diagnostics) and `queues N ARGS...` (rabbitmq-queues)
#   cluster.sh kill-consul N   SIGKILL of Consul server N
#   cluster.sh restart-consul N  starts server N again on its data dir; waits until it rejoined
#   cluster.sh consul-leader   prints 1..3: the Consul server that is the raft leader now
#   cluster.sh kill-host N / start-host N   SIGKILL / start again wasmeca host N (same ports, args)
#   cluster.sh clean           `down`, then removes the cluster dir
#
# Ports (defaults; every one of them must be free, `up` checks):
#   RabbitMQ node i (1..3): AMQP CLUSTER_AMQP_BASE+i-1 (5701..5703), Erlang distribution
#       CLUSTER_DIST_BASE+i-1 (default AMQP+20000: 25701..25703), a private epmd on
#       CLUSTER_EPMD_PORT (default CLUSTER_AMQP_BASE-1000: 4701); node names
#       <CLUSTER_NODE_PREFIX>i@localhost (wasmeca-c1@localhost ...); rabbitmqctl's own
#       distribution ports CLUSTER_DIST_BASE+10000..+10019. User guest/guest (loopback only).
#       No plugins (no management).
#   Consul server i: HTTP CLUSTER_CONSUL_HTTP_BASE+i-1 (8701..8703), serf LAN +10 (8711..),
#       serf WAN +20 (8721..), server RPC +30 (8731..), gRPC +40 (8741..); or set
#       CLUSTER_CONSUL_{SERF_LAN,SERF_WAN,SERVER,GRPC}_BASE; DNS off unless
#       CLUSTER_CONSUL_DNS_BASE is set. Binary: tests/services/consul.sh install (Consul 1.8.7).
#   wasmeca host i: WASMECA_REST / WASMECA_HTTP on free 127.0.0.1 ports (kept for start-host).
#       Its environment: AMQP_URL = the 3 amqp://guest:guest@127.0.0.1:P/%2f URLs comma-separated,
#       CONSUL_HTTP_ADDR = the 3 http://127.0.0.1:P comma-separated, DATABASE_URL
#       (CLUSTER_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test?schema=wasmeca_cluster),
#       REDIS_URL (CLUSTER_REDIS_URL, default redis://127.0.0.1:6379/); cwd = the repo root;
#       output in <cluster dir>/host-i/host.log.
#
# Other environment: CLUSTER_DIR (default <repo>/target/cluster), WASMECA_BIN (default
#   <repo>/target/release/wasmeca), CLUSTER_RABBIT_TIMEOUT (s, default 90),
#   CLUSTER_CONSUL_TIMEOUT (s, default 30), CLUSTER_STOP_TIMEOUT (s, default 5),
#   CLUSTER_HOST_WAIT (s to wait for a host's REST port, default 30; 0 = do not wait),
#   RABBITMQ_SCRIPTS (default /usr/lib/rabbitmq/bin: the real scripts, not Debian's /usr/sbin
#   wrappers, which su to the rabbitmq user and use /var/lib/rabbitmq).
# The ports, names and paths are fixed at `up` in <cluster dir>/cluster.conf; later commands use
# those, whatever their environment says.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$REPO_ROOT/target/cluster}
[[ $CLUSTER_DIR == /* ]] || CLUSTER_DIR=$PWD/$CLUSTER_DIR
CLUSTER_DIR=${CLUSTER_DIR%/}
[[ -n $CLUSTER_DIR ]] || {
    echo "cluster.sh: error: CLUSTER_DIR must not be /" >&2
    exit 1
}
CONF_FILE=$CLUSTER_DIR/cluster.conf
ERL_HOME=$CLUSTER_DIR/home # HOME of our Erlang nodes and CLI calls: holds our .erlang.cookie
TAG_VAR=CLUSTER_SH_TAG     # env marker on every process we start: <cluster dir>/<component>
NODES=3

RABBIT_TIMEOUT=${CLUSTER_RABBIT_TIMEOUT:-90}
CONSUL_TIMEOUT=${CLUSTER_CONSUL_TIMEOUT:-30}
STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-5}
HOST_WAIT=${CLUSTER_HOST_WAIT:-30}
RABBIT_ERL_ARGS=${CLUSTER_RABBIT_ERL_ARGS-}

# A caller's RabbitMQ/Erlang settings must not leak into our nodes or CLI calls (they would
# e.g. point them at the system node's files or ports).
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(RABBITMQ_|ERL_EPMD_|ERL_(A|Z)?FLAGS$)' | grep -vx RABBITMQ_SCRIPTS || true)
unset NOTIFY_SOCKET RUNNING_UNDER_SYSTEMD
RABBITMQ_SCRIPTS=${RABBITMQ_SCRIPTS:-/usr/lib/rabbitmq/bin}

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() {
    printf 'cluster.sh: error: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}
now_ms() {
    local t=${EPOCHREALTIME/./}
    printf '%s\n' $((10#$t / 1000))
}
PHASE_T0=0
phase_start() { PHASE_T0=$(now_ms); }
phase_end() { log "$(printf '%-34s %6d ms' "$1" $(($(now_ms) - PHASE_T0)))"; }

# ---------------------------------------------------------------------------------------------
# settings

load_settings() {
    if [[ ${1:-} != fresh && -r $CONF_FILE ]]; then
        # shellcheck source=/dev/null
        . "$CONF_FILE"
        return 0
    fi
    AMQP_BASE=${CLUSTER_AMQP_BASE:-5701}
    DIST_BASE=${CLUSTER_DIST_BASE:-$((AMQP_BASE + 20000))}
    EPMD_PORT=${CLUSTER_EPMD_PORT:-$((AMQP_BASE - 1000))}
    CTL_DIST_MIN=$((DIST_BASE + 10000))
    CTL_DIST_MAX=$((DIST_BASE + 10019))
    NODE_PREFIX=${CLUSTER_NODE_PREFIX:-wasmeca-c}
    NODE_HOST=localhost
    CONSUL_HTTP_BASE=${CLUSTER_CONSUL_HTTP_BASE:-8701}
    CONSUL_SERF_LAN_BASE=${CLUSTER_CONSUL_SERF_LAN_BASE:-$((CONSUL_HTTP_BASE + 10))}
    CONSUL_SERF_WAN_BASE=${CLUSTER_CONSUL_SERF_WAN_BASE:-$((CONSUL_HTTP_BASE + 20))}
    CONSUL_SERVER_BASE=${CLUSTER_CONSUL_SERVER_BASE:-$((CONSUL_HTTP_BASE + 30))}
    CONSUL_GRPC_BASE=${CLUSTER_CONSUL_GRPC_BASE:-$((CONSUL_HTTP_BASE + 40))}
    CONSUL_DNS_BASE=${CLUSTER_CONSUL_DNS_BASE:--1}
    CONSUL_BIN=${CONSUL_BIN:-}
    HOST_DATABASE_URL=${CLUSTER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?schema=wasmeca_cluster}
    HOST_REDIS_URL=${CLUSTER_REDIS_URL:-redis://127.0.0.1:6379/}
    local v
    for v in AMQP_BASE DIST_BASE EPMD_PORT CONSUL_HTTP_BASE CONSUL_SERF_LAN_BASE \
        CONSUL_SERF_WAN_BASE CONSUL_SERVER_BASE CONSUL_GRPC_BASE; do
        if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0 || ${!v} + NODES > 65536)); then
            die "$v=${!v} is not a usable port number"
        fi
    done
    [[ $CONSUL_DNS_BASE == -1 || $CONSUL_DNS_BASE =~ ^[0-9]+$ ]] ||
        die "CLUSTER_CONSUL_DNS_BASE must be a port number or -1"
    [[ $NODE_PREFIX =~ ^[A-Za-z0-9_-]+$ ]] || die "CLUSTER_NODE_PREFIX may hold only [A-Za-z0-9_-]"
}

save_settings() {
    local v
    {
        echo "# written by cluster.sh up; read by its other commands"
        for v in AMQP_BASE DIST_BASE EPMD_PORT CTL_DIST_MIN CTL_DIST_MAX NODE_PREFIX NODE_HOST \
            CONSUL_HTTP_BASE CONSUL_SERF_LAN_BASE CONSUL_SERF_WAN_BASE CONSUL_SERVER_BASE \
            CONSUL_GRPC_BASE CONSUL_DNS_BASE CONSUL_BIN HOST_DATABASE_URL \
            HOST_REDIS_URL; do
            printf '%s=%q\n' "$v" "${!v}"
        done
    } >"$CONF_FILE.tmp"
    mv "$CONF_FILE.tmp" "$CONF_FILE"
}

rabbit_node() { printf '%s%s@%s\n' "$NODE_PREFIX" "$1" "$NODE_HOST"; }
amqp_port() { echo $((AMQP_BASE + $1 - 1)); }
dist_port() { echo $((DIST_BASE + $1 - 1)); }
amqp_url() { printf 'amqp://guest:guest@127.0.0.1:%s/%%2f\n' "$(amqp_port "$1")"; }
consul_http() { echo $((CONSUL_HTTP_BASE + $1 - 1)); }
consul_lan() { echo $((CONSUL_SERF_LAN_BASE + $1 - 1)); }
consul_wan() { echo $((CONSUL_SERF_WAN_BASE + $1 - 1)); }
consul_server() { echo $((CONSUL_SERVER_BASE + $1 - 1)); }
consul_grpc() { echo $((CONSUL_GRPC_BASE + $1 - 1)); }
consul_dns() { if [[ $CONSUL_DNS_BASE == -1 ]]; then echo -1; else echo $((CONSUL_DNS_BASE + $1 - 1)); fi; }
consul_addr() { printf 'http://127.0.0.1:%s\n' "$(consul_http "$1")"; }
joined() {
    local sep=$1 fn=$2 i out=""
    for ((i = 1; i <= NODES; i++)); do out+=${out:+$sep}$($fn "$i"); done
    printf '%s\n' "$out"
}

check_index() {
    [[ ${1:-} =~ ^[1-9][0-9]*$ ]] || die "expected a node number, got '${1:-}'"
    if [[ ${2:-} != any ]] && (($1 > NODES)); then die "node number $1 is not in 1..$NODES"; fi
}

# ---------------------------------------------------------------------------------------------
# processes: everything we start carries CLUSTER_SH_TAG=<its folder> in its environment, so a
# recorded pid is only ever signalled while it still is that process (no pid-reuse accidents).

# running PID: PID exists and is not a zombie.
running() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # the fields after "(comm) "
    [[ -n $stat && ${stat:0:1} != Z && ${stat:0:1} != X ]]
}
# alive PID TAG: PID runs and carries TAG.
alive() {
    running "$1" && grep -qzxF -- "$TAG_VAR=$2" "/proc/$1/environ" 2>/dev/null
}

read_pid() { if [[ -r $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# Pids of all live processes carrying a tag under the cluster dir (or exactly $1 if given).
tagged_pids() {
    local f pid
    local -a opts=(-lzF -- "$TAG_VAR=$CLUSTER_DIR/")
    if [[ -n ${1:-} ]]; then opts=(-lzxF -- "$TAG_VAR=$1"); fi
    # one grep over every process's environment; vanished processes are just skipped
    grep "${opts[@]}" /proc/[0-9]*/environ 2>/dev/null | while read -r f; do
        pid=${f#/proc/}
        pid=${pid%/environ}
        [[ $pid != "$$" && $pid != "$BASHPID" ]] || continue
        running "$pid" || continue
        printf '%s\n' "$pid"
    done || true
}

# stop_pids SIGNAL_FIRST TIMEOUT PID...: SIGNAL_FIRST (TERM or KILL) to all, wait up to TIMEOUT
# s, then SIGKILL whoever is left. Pids must have been checked with `alive` by the caller.
stop_pids() {
    local sig=$1 timeout=$2 pid left i
    shift 2
    [[ $# -gt 0 ]] || return 0
    kill -"$sig" "$@" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        left=0
        for pid in "$@"; do
            if running "$pid"; then
                left=1
                break
            fi
        done
        ((left)) || return 0
        sleep 0.1
    done
    for pid in "$@"; do
        if running "$pid"; then
            log "pid $pid still running ${timeout}s after SIG$sig; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for ((i = 0; i < 30; i++)); do
        left=0
        for pid in "$@"; do
            if running "$pid"; then left=1; fi
        done
        ((left)) || return 0
        sleep 0.1
    done
}

# spawn DIR LOG CMD...: runs CMD in its own session (it outlives this script; no terminal
# signals), cwd DIR, stdio to LOG, tagged with DIR; sets SPAWNED to its pid. Returns once the
# pid carries its tag (or has exited): until the subshell has exec'd `env`, /proc/PID/environ
# is still this script's, and `alive PID DIR` would call a process that is starting dead (on a
# loaded machine that window lasted long enough for CI to fail "epmd did not start").
SPAWNED=
spawn() {
    local dir=$1 logf=$2 i
    shift 2
    (cd "$dir" && exec env "$TAG_VAR=$dir" setsid "$@") </dev/null >>"$logf" 2>&1 9>&- &
    SPAWNED=$!
    for ((i = 0; i < 500; i++)); do
        alive "$SPAWNED" "$dir" && return 0
        running "$SPAWNED" || return 0
        sleep 0.01
    done
}

# ---------------------------------------------------------------------------------------------
# ports

declare -A USED_PORTS=()
load_used_ports() {
    local f sl addr st
    USED_PORTS=()
    for f in /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; do
        [[ -r $f ]] || continue
        while read -r sl addr _ st _; do
            [[ $sl == *: && $addr =~ :([0-9A-Fa-f]{4})$ ]] || continue
            [[ $f == */udp* || $st == 0A ]] || continue # TCP: listeners only
            USED_PORTS[$((16#${BASH_REMATCH[1]}))]=1
        done <"$f"
    done
}
port_free() { [[ -z ${USED_PORTS[$1]:-} ]]; }
who_listens() { ss -Htulpn "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n 1; }
require_free() {
    local what=$1 port=$2 by
    port_free "$port" && return 0
    by=$(who_listens "$port")
    die "port $port ($what) is already in use${by:+ by $by}; stop that or choose other ports (see the CLUSTER_* variables in the header)"
}
# A free port below the ephemeral range, reserved for this run.
PORT=
pick_port() {
    local tries=0
    while ((tries++ < 1000)); do
        PORT=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        if port_free "$PORT"; then
            USED_PORTS[$PORT]=1
            return 0
        fi
    done
    die "no free port found"
}
# reserve_cluster_ports HOST: marks the cluster's own ports (also those of nodes that are down
# now) and the ports of hosts other than HOST as used, so that a host's port never takes one.
reserve_cluster_ports() {
    local self=$1 i p r h
    USED_PORTS[$EPMD_PORT]=1
    for ((i = 1; i <= NODES; i++)); do
        for p in "$(amqp_port "$i")" "$(dist_port "$i")" "$(consul_http "$i")" "$(consul_lan "$i")" \
            "$(consul_wan "$i")" "$(consul_server "$i")" "$(consul_grpc "$i")" "$(consul_dns "$i")"; do
            if ((p > 0)); then USED_PORTS[$p]=1; fi
        done
    done
    for ((p = CTL_DIST_MIN; p <= CTL_DIST_MAX; p++)); do USED_PORTS[$p]=1; done
    while read -r i; do
        if [[ $i != "$self" ]] && read -r r h < <(host_ports "$i"); then
            USED_PORTS[$r]=1
            USED_PORTS[$h]=1
        fi
    done < <(host_indices)
}
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# epmd: a private one, so our node names never appear in (or depend on) the system's epmd

epmd_pid() {
    local pid
    pid=$(read_pid "$CLUSTER_DIR/epmd/epmd.pid")
    alive "$pid" "$CLUSTER_DIR/epmd" && printf '%s\n' "$pid"
}

ensure_epmd() {
    epmd_pid >/dev/null && return 0
    local d=$CLUSTER_DIR/epmd i
    mkdir -p "$d"
    load_used_ports
    require_free "epmd" "$EPMD_PORT"
    spawn "$d" "$d/epmd.log" epmd -port "$EPMD_PORT" -address 127.0.0.1
    printf '%s\n' "$SPAWNED" >"$d/epmd.pid"
    for ((i = 0; i < 100; i++)); do
        tcp_open "$EPMD_PORT" && return 0
        alive "$SPAWNED" "$d" || break
        sleep 0.05
    done
    tail -n 5 "$d/epmd.log" >&2 || true
    die "epmd did not start on port $EPMD_PORT"
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ

# Environment of our CLI calls (rabbitmqctl, rabbitmq-diagnostics, rabbitmq-queues).
rmq_cli() {
    local tool=$1
    shift
    env HOME="$ERL_HOME" ERL_EPMD_PORT="$EPMD_PORT" \
        RABBITMQ_CONF_ENV_FILE="$ERL_HOME/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$ERL_HOME/cli.conf" \
        RABBITMQ_CTL_DIST_PORT_MIN="$CTL_DIST_MIN" RABBITMQ_CTL_DIST_PORT_MAX="$CTL_DIST_MAX" \
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        ERL_CRASH_DUMP_SECONDS=0 \
        "$RABBITMQ_SCRIPTS/$tool" "$@" 9>&-
}
ctl() {
    local n=$1
    shift
    rmq_cli rabbitmqctl -n "$(rabbit_node "$n")" "$@"
}

ensure_erl_home() {
    mkdir -p "$ERL_HOME"
    chmod 700 "$ERL_HOME"
    if [[ ! -s $ERL_HOME/.erlang.cookie ]]; then
        (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F' >"$ERL_HOME/.erlang.cookie.tmp")
        mv "$ERL_HOME/.erlang.cookie.tmp" "$ERL_HOME/.erlang.cookie"
    fi
    chmod 400 "$ERL_HOME/.erlang.cookie"
    # Empty on purpose: read instead of /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost).
    : >"$ERL_HOME/rabbitmq-env.conf"
    : >"$ERL_HOME/cli.conf"
}

rabbit_dir() { printf '%s/rabbit-%s\n' "$CLUSTER_DIR" "$1"; }

# Pid of node N's beam.smp (from the pid file RabbitMQ writes itself).
rabbit_pid() {
    local d pid
    d=$(rabbit_dir "$1")
    pid=$(read_pid "$d/rabbit.pid")
    alive "$pid" "$d" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == beam.smp ]] && printf '%s\n' "$pid"
}
# Any live process of node N (the rabbitmq-server shell, beam.smp and its helpers).
rabbit_any_pids() { tagged_pids "$(rabbit_dir "$1")"; }

write_rabbit_files() {
    local n=$1 d
    d=$(rabbit_dir "$n")
    mkdir -p "$d/mnesia" "$d/log"
    cat >"$d/rabbitmq.conf" <<CONF
# written by deploy/cluster.sh for $(rabbit_node "$n")
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
# guest/guest may connect from loopback only (the default, spelled out)
loopback_users.guest = true
log.console = false
log.file.level = info
cluster_name = wasmeca-cluster
CONF
    printf '[].\n' >"$d/enabled_plugins"
    : >"$d/rabbitmq-env.conf"
}

launch_rabbit() {
    local n=$1 d
    d=$(rabbit_dir "$n")
    write_rabbit_files "$n"
    rm -f "$d/rabbit.pid"
    printf '==> %s starting %s\n' "$(date '+%F %T')" "$(rabbit_node "$n")" >>"$d/log/console.log"
    # The real script, not /usr/sbin's wrapper (which would su to rabbitmq and cd
    # /var/lib/rabbitmq). It stays as a shell that forwards SIGTERM to its beam.smp child;
    # RabbitMQ writes the beam.smp pid to RABBITMQ_PID_FILE.
    spawn "$d" "$d/log/console.log" env \
        HOME="$ERL_HOME" ERL_EPMD_PORT="$EPMD_PORT" ERL_CRASH_DUMP="$d/log/erl_crash.dump" \
        RABBITMQ_NODENAME="$(rabbit_node "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$d/mnesia" \
        RABBITMQ_LOG_BASE="$d/log" \
        RABBITMQ_PID_FILE="$d/rabbit.pid" \
        RABBITMQ_MOTD_FILE="$d/motd" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} $RABBIT_ERL_ARGS" \
        "$RABBITMQ_SCRIPTS/rabbitmq-server"
    printf '%s\n' "$SPAWNED" >"$d/launcher.pid"
}

# wait_rabbit_port N DEADLINE_S: until node N's beam runs and its AMQP port accepts.
wait_rabbit_port() {
    local n=$1 deadline=$2 d
    d=$(rabbit_dir "$n")
    while :; do
        if rabbit_pid "$n" >/dev/null && tcp_open "$(amqp_port "$n")"; then return 0; fi
        if [[ -z $(rabbit_any_pids "$n") ]]; then
            log "RabbitMQ node $n exited; end of $d/log/console.log and the node log:"
            tail -n 20 "$d/log/console.log" >&2 || true
            tail -n 20 "$d/log/$(rabbit_node "$n").log" >&2 2>/dev/null || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "RabbitMQ node $n: AMQP port $(amqp_port "$n") not open after ${RABBIT_TIMEOUT}s (see $d/log)"
            return 1
        fi
        sleep 0.1
    done
}

# Running node names as seen by node N (empty if it does not answer).
running_nodes() {
    local json
    json=$(ctl "$1" -q cluster_status --formatter json 2>/dev/null) || return 0
    [[ $json =~ \"running_nodes\":\[([^]]*)\] ]] || return 0
    tr ',' '\n' <<<"${BASH_REMATCH[1]}" | tr -d '"' | sed '/^$/d'
}

# wait_running N COUNT DEADLINE_S: until node N's cluster_status lists COUNT running nodes.
wait_running() {
    local n=$1 want=$2 deadline=$3 got
    while :; do
        got=$(running_nodes "$n" | wc -l)
        ((got == want)) && return 0
        if ((SECONDS >= deadline)); then
            log "node $n sees $got running nodes, not $want, after ${RABBIT_TIMEOUT}s"
            return 1
        fi
        sleep 0.3
    done
}

# Joins nodes 2..NODES to node 1: what `rabbitmqctl -n NODE stop_app`, `join_cluster NODE1` and
# `start_app` do (those commands are thin rpc calls of rabbit:stop/0,
# rabbit_mnesia:join_cluster/2 and rabbit:start/0), but in one CLI call run on node 1: each
# rabbitmqctl call starts an Erlang VM (~0.7 s of CPU), and this 2-core machine is busy booting
# the nodes. stop_app on all at once, the joins one after the other, start_app on all at once.
join_cluster() {
    local i others="" out
    for ((i = 2; i <= NODES; i++)); do others+=${others:+,}"'$(rabbit_node "$i")'"; done
    [[ -n $others ]] || return 0
    out=$(ctl 1 -q eval "
        Others = [$others],
        Call = fun(N, M, F, A) ->
            case rpc:call(N, M, F, A) of
                ok -> ok;
                {ok, already_member} -> ok;
                Err -> throw({N, M, F, Err})
            end
        end,
        Par = fun(M, F, A) ->
            Self = self(),
            Rs = [begin R = make_ref(),
                        spawn(fun() -> Self ! {R, catch Call(N, M, F, A)} end), R end
                  || N <- Others],
            [receive {R, ok} -> ok; {R, E} -> throw(E) end || R <- Rs],
            ok
        end,
        try
            Par(rabbit, await_startup, []),
            Par(rabbit, stop, []),
            [Call(N, rabbit_mnesia, join_cluster, [node(), disc]) || N <- Others],
            Par(rabbit, start, []),
            joined
        catch throw:E -> {failed, E}
        end." 2>"$CLUSTER_DIR/join.log") || {
        log "rabbitmqctl eval on node 1 failed: $out"
        cat "$CLUSTER_DIR/join.log" >&2
        return 1
    }
    [[ $out == joined ]] || {
        log "joining the cluster failed: $out"
        return 1
    }
}

rabbit_index_of() {
    local node=$1 i
    for ((i = 1; i <= NODES; i++)); do
        if [[ $(rabbit_node "$i") == "$node" ]]; then
            echo "$i"
            return 0
        fi
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Consul

consul_dir() { printf '%s/consul-%s\n' "$CLUSTER_DIR" "$1"; }
consul_pid() {
    local d pid
    d=$(consul_dir "$1")
    pid=$(read_pid "$d/consul.pid")
    alive "$pid" "$d" && printf '%s\n' "$pid"
}

find_consul() {
    if [[ -n $CONSUL_BIN && -x $CONSUL_BIN ]]; then return 0; fi
    CONSUL_BIN=$("$REPO_ROOT/tests/services/consul.sh" install) ||
        die "tests/services/consul.sh install failed"
    [[ -x $CONSUL_BIN ]] || die "consul.sh install printed '$CONSUL_BIN', which is not executable"
}

launch_consul() {
    local n=$1 d j
    d=$(consul_dir "$n")
    mkdir -p "$d/data"
    local -a args=(
        agent -server -bootstrap-expect "$NODES"
        -node "wasmeca-consul-$n" -datacenter dc1
        -data-dir "$d/data" -pid-file "$d/consul.pid"
        -bind 127.0.0.1 -advertise 127.0.0.1 -client 127.0.0.1
        -http-port "$(consul_http "$n")" -dns-port "$(consul_dns "$n")"
        -serf-lan-port "$(consul_lan "$n")" -serf-wan-port "$(consul_wan "$n")"
        -server-port "$(consul_server "$n")" -grpc-port "$(consul_grpc "$n")"
        -disable-host-node-id -retry-interval 1s -log-level info
        # Production timing (raft_multiplier 1): a new leader within ~1-3 s of losing one.
        -hcl 'performance { raft_multiplier = 1 }'
        -hcl 'disable_update_check = true'
    )
    for ((j = 1; j <= NODES; j++)); do
        if ((j != n)); then args+=(-retry-join "127.0.0.1:$(consul_lan "$j")"); fi
    done
    rm -f "$d/consul.pid"
    {
        printf '==> %s' "$(date '+%F %T')"
        printf ' %q' "$CONSUL_BIN" "${args[@]}"
        printf '\n'
    } >>"$d/consul.log"
    spawn "$d" "$d/consul.log" "$CONSUL_BIN" "${args[@]}"
    printf '%s\n' "$SPAWNED" >"$d/consul.pid"
}

consul_get() { curl -fsS --max-time 2 "http://127.0.0.1:$(consul_http "$1")/v1/status/$2" 2>/dev/null; }

# Leader "127.0.0.1:PORT" as server N sees it (empty if none / no answer).
consul_leader_of() {
    local out
    out=$(consul_get "$1" leader) || return 0
    out=${out//\"/}
    printf '%s\n' "$out"
}
# How many cluster members server N sees alive (serf status 1).
consul_alive_of() {
    local out
    out=$(curl -fsS --max-time 2 "http://127.0.0.1:$(consul_http "$1")/v1/agent/members" 2>/dev/null) || {
        echo 0
        return 0
    }
    grep -o '"Status":1[,}]' <<<"$out" | wc -l
}
consul_peers_of() {
    local out
    out=$(consul_get "$1" peers) || {
        echo 0
        return 0
    }
    grep -o '"[^"]*"' <<<"$out" | wc -l
}

# wait_consul DEADLINE_S N...: until each server N reports a leader, $NODES raft peers and
# $NODES live members.
wait_consul() {
    local deadline=$1 n ok leader peers="" members=""
    shift
    while :; do
        ok=1
        for n in "$@"; do
            if ! consul_pid "$n" >/dev/null; then
                log "Consul server $n exited; end of $(consul_dir "$n")/consul.log:"
                tail -n 20 "$(consul_dir "$n")/consul.log" >&2 || true
                return 1
            fi
            leader=$(consul_leader_of "$n")
            peers=$(consul_peers_of "$n")
            members=$(consul_alive_of "$n")
            if [[ -z $leader ]] || ((peers != NODES || members != NODES)); then
                ok=0
                break
            fi
        done
        ((ok)) && return 0
        if ((SECONDS >= deadline)); then
            log "Consul: no leader with $NODES peers after ${CONSUL_TIMEOUT}s (server $n: leader '${leader:-}', $peers raft peers, $members live members)"
            return 1
        fi
        sleep 0.1
    done
}

# Index of the leader, asking the live servers; empty if none.
consul_leader_index() {
    local n leader j
    for ((n = 1; n <= NODES; n++)); do
        consul_pid "$n" >/dev/null || continue
        leader=$(consul_leader_of "$n")
        [[ -n $leader ]] || continue
        for ((j = 1; j <= NODES; j++)); do
            if [[ $leader == "127.0.0.1:$(consul_server "$j")" ]]; then
                echo "$j"
                return 0
            fi
        done
    done
    return 0
}

# ---------------------------------------------------------------------------------------------
# wasmeca hosts

host_dir() { printf '%s/host-%s\n' "$CLUSTER_DIR" "$1"; }
host_pid() {
    local d pid
    d=$(host_dir "$1")
    pid=$(read_pid "$d/host.pid")
    alive "$pid" "$d" && printf '%s\n' "$pid"
}
host_indices() {
    local d
    for d in "$CLUSTER_DIR"/host-*; do
        [[ -d $d && ${d##*/host-} =~ ^[0-9]+$ ]] && printf '%s\n' "${d##*/host-}"
    done | sort -n
}
host_ports() {
    # prints "REST_PORT HTTP_PORT" if known
    local f
    f=$(host_dir "$1")/ports
    [[ -r $f ]] && cat "$f"
}

write_host_args() {
    : >"$CLUSTER_DIR/hosts.args"
    if [[ $# -gt 0 ]]; then printf '%s\0' "$@" >"$CLUSTER_DIR/hosts.args"; fi
}

# The wasmeca binary: $WASMECA_BIN if set (it is then remembered for start-host), else the one
# remembered, else <repo>/target/release/wasmeca.
WASMECA_BIN=${WASMECA_BIN:-}
resolve_wasmeca_bin() {
    local saved=$CLUSTER_DIR/hosts.bin
    if [[ -n $WASMECA_BIN ]]; then
        if [[ $WASMECA_BIN != */* ]]; then
            WASMECA_BIN=$(command -v "$WASMECA_BIN") || die "WASMECA_BIN: no such command"
        fi
        [[ $WASMECA_BIN == /* ]] || WASMECA_BIN=$PWD/$WASMECA_BIN
        mkdir -p "$CLUSTER_DIR"
        printf '%s\n' "$WASMECA_BIN" >"$saved"
    elif [[ -s $saved ]]; then
        WASMECA_BIN=$(cat "$saved")
    else
        WASMECA_BIN=$REPO_ROOT/target/release/wasmeca
    fi
    [[ -x $WASMECA_BIN ]] || die "wasmeca binary $WASMECA_BIN not found or not executable (set WASMECA_BIN)"
}

launch_host() {
    local n=$1 d rest="" http="" i
    d=$(host_dir "$n")
    mkdir -p "$d"
    local -a args=()
    if [[ -s $CLUSTER_DIR/hosts.args ]]; then mapfile -d '' -t args <"$CLUSTER_DIR/hosts.args"; fi
    load_used_ports
    reserve_cluster_ports "$n"
    if read -r rest http < <(host_ports "$n") && port_free "$rest" && port_free "$http"; then
        USED_PORTS[$rest]=1
        USED_PORTS[$http]=1
    else
        pick_port && rest=$PORT
        pick_port && http=$PORT
    fi
    printf '%s %s\n' "$rest" "$http" >"$d/ports"
    {
        printf '==> %s host %s:' "$(date '+%F %T')" "$n"
        printf ' %q' "$WASMECA_BIN" serve "${args[@]}"
        printf '\n'
    } >>"$d/host.log"
    spawn "$d" "$d/host.log" env -C "$REPO_ROOT" \
        AMQP_URL="$(joined , amqp_url)" \
        CONSUL_HTTP_ADDR="$(joined , consul_addr)" \
        WASMECA_REST="127.0.0.1:$rest" \
        WASMECA_HTTP="127.0.0.1:$http" \
        DATABASE_URL="$HOST_DATABASE_URL" \
        REDIS_URL="$HOST_REDIS_URL" \
        "$WASMECA_BIN" serve "${args[@]}"
    printf '%s\n' "$SPAWNED" >"$d/host.pid"
    sleep 0.2
    if ! host_pid "$n" >/dev/null; then
        log "wasmeca host $n exited at once; end of $d/host.log:"
        tail -n 20 "$d/host.log" >&2 || true
        return 1
    fi
    if ((HOST_WAIT > 0)); then
        for ((i = 0; i < HOST_WAIT * 10; i++)); do
            tcp_open "$rest" && return 0
            if ! host_pid "$n" >/dev/null; then
                log "wasmeca host $n exited; end of $d/host.log:"
                tail -n 20 "$d/host.log" >&2 || true
                return 1
            fi
            sleep 0.1
        done
        log "wasmeca host $n: REST port $rest not open after ${HOST_WAIT}s (still running; see $d/host.log)"
    fi
}

# ---------------------------------------------------------------------------------------------
# locking

lock() {
    mkdir -p "$CLUSTER_DIR"
    exec 9>"$CLUSTER_DIR/.lock"
    flock -w 600 9 || die "timed out waiting for another cluster.sh command on $CLUSTER_DIR"
}

# ---------------------------------------------------------------------------------------------
# commands

any_alive() {
    [[ -n $(tagged_pids) ]]
}

cmd_env() {
    local i rest http
    printf 'CLUSTER_DIR=%q\n' "$CLUSTER_DIR"
    printf 'AMQP_URLS=%s\n' "$(joined , amqp_url)"
    for ((i = 1; i <= NODES; i++)); do
        printf 'AMQP_URL_%s=%s\n' "$i" "$(amqp_url "$i")"
        printf 'RABBIT_NODE_%s=%s\n' "$i" "$(rabbit_node "$i")"
    done
    printf 'CONSUL_HTTP_ADDRS=%s\n' "$(joined , consul_addr)"
    for ((i = 1; i <= NODES; i++)); do
        printf 'CONSUL_HTTP_ADDR_%s=%s\n' "$i" "$(consul_addr "$i")"
    done
    while read -r i; do
        if read -r rest http < <(host_ports "$i"); then
            printf 'WASMECA_REST_%s=127.0.0.1:%s\nWASMECA_HTTP_%s=127.0.0.1:%s\n' "$i" "$rest" "$i" "$http"
        fi
    done < <(host_indices)
    printf 'CLUSTER_ERLANG_HOME=%q\nCLUSTER_EPMD_PORT=%s\n' "$ERL_HOME" "$EPMD_PORT"
}

cmd_up() {
    local hosts=0
    local -a host_args=()
    while [[ $# -gt 0 ]]; do
        case $1 in
        --hosts) hosts=${2:?--hosts needs a number}; shift 2 ;;
        --hosts=*) hosts=${1#*=}; shift ;;
        --) shift; host_args=("$@"); break ;;
        *) usage ;;
        esac
    done
    [[ $hosts =~ ^[0-9]+$ ]] || die "--hosts needs a number"
    command -v curl >/dev/null || die "curl not found"
    command -v setsid >/dev/null || die "setsid not found (util-linux)"
    [[ -x $RABBITMQ_SCRIPTS/rabbitmq-server ]] || die "$RABBITMQ_SCRIPTS/rabbitmq-server not found (set RABBITMQ_SCRIPTS)"
    lock
    local t_all i
    t_all=$(now_ms)

    if any_alive; then
        load_settings
        local missing=""
        epmd_pid >/dev/null || missing+=" epmd"
        for ((i = 1; i <= NODES; i++)); do
            rabbit_pid "$i" >/dev/null || missing+=" rabbit-$i"
            consul_pid "$i" >/dev/null || missing+=" consul-$i"
        done
        [[ -z $missing ]] ||
            die "the cluster in $CLUSTER_DIR is partly up (not running:$missing): use restart-rabbit/restart-consul, or down first"
        log "the cluster in $CLUSTER_DIR is up already; reusing it"
        if ((hosts > 0)); then
            resolve_wasmeca_bin
            if [[ ${#host_args[@]} -gt 0 || ! -e $CLUSTER_DIR/hosts.args ]]; then
                write_host_args "${host_args[@]}"
            fi
            for ((i = 1; i <= hosts; i++)); do
                host_pid "$i" >/dev/null || launch_host "$i" || die "wasmeca host $i did not start"
            done
        fi
        cmd_env
        return 0
    fi

    # ---- fresh start
    load_settings fresh
    phase_start
    load_used_ports
    require_free "epmd" "$EPMD_PORT"
    for ((i = 1; i <= NODES; i++)); do
        require_free "RabbitMQ $i AMQP" "$(amqp_port "$i")"
        require_free "RabbitMQ $i distribution" "$(dist_port "$i")"
        require_free "Consul $i HTTP" "$(consul_http "$i")"
        require_free "Consul $i serf LAN" "$(consul_lan "$i")"
        require_free "Consul $i serf WAN" "$(consul_wan "$i")"
        require_free "Consul $i server RPC" "$(consul_server "$i")"
        require_free "Consul $i gRPC" "$(consul_grpc "$i")"
        if [[ $CONSUL_DNS_BASE != -1 ]]; then require_free "Consul $i DNS" "$(consul_dns "$i")"; fi
    done
    find_consul
    rm -rf "$CLUSTER_DIR"/rabbit-* "$CLUSTER_DIR"/consul-* "$CLUSTER_DIR"/host-* \
        "$CLUSTER_DIR"/epmd "$CLUSTER_DIR/hosts.args" "$CLUSTER_DIR/hosts.bin"
    if ((hosts > 0)); then resolve_wasmeca_bin; fi
    save_settings
    ensure_erl_home
    write_host_args "${host_args[@]}"
    phase_end "preflight (ports, consul binary)"

    phase_start
    ensure_epmd
    for ((i = 1; i <= NODES; i++)); do launch_rabbit "$i"; done
    for ((i = 1; i <= NODES; i++)); do launch_consul "$i"; done
    phase_end "spawn epmd, $NODES rabbit, $NODES consul"

    local deadline
    phase_start
    deadline=$((SECONDS + CONSUL_TIMEOUT))
    wait_consul "$deadline" $(seq 1 "$NODES") || fail_up "Consul cluster did not form"
    phase_end "consul: leader + $NODES peers"

    phase_start
    deadline=$((SECONDS + RABBIT_TIMEOUT))
    for ((i = 1; i <= NODES; i++)); do
        wait_rabbit_port "$i" "$deadline" || fail_up "RabbitMQ node $i did not boot"
    done
    phase_end "rabbit: $NODES nodes booted"

    phase_start
    join_cluster || fail_up "RabbitMQ nodes 2..$NODES did not join node 1"
    phase_end "rabbit: join nodes 2..$NODES to node 1"

    phase_start
    wait_running 1 "$NODES" "$deadline" || fail_up "RabbitMQ cluster did not form"
    phase_end "rabbit: cluster_status $NODES running"

    if ((hosts > 0)); then
        phase_start
        for ((i = 1; i <= hosts; i++)); do
            launch_host "$i" || fail_up "wasmeca host $i did not start"
        done
        phase_end "$hosts wasmeca host(s)"
    fi
    log "$(printf '%-34s %6d ms' "up total" $(($(now_ms) - t_all)))"
    cmd_env
}

fail_up() {
    log "$1; stopping what was started (logs stay in $CLUSTER_DIR)"
    do_down KILL >/dev/null 2>&1 || true
    exit 1
}

# do_down TERM|KILL
do_down() {
    local first=$1 i pid
    local -a pids=()
    # 1. hosts (clients first)
    while read -r i; do
        if pid=$(host_pid "$i"); then pids+=("$pid"); fi
    done < <(host_indices)
    stop_pids "$first" "$STOP_TIMEOUT" "${pids[@]}"
    # 2. RabbitMQ (beam.smp; its shell follows) and Consul, all at once
    pids=()
    for ((i = 1; i <= NODES; i++)); do
        if pid=$(rabbit_pid "$i"); then pids+=("$pid"); fi
        if pid=$(consul_pid "$i"); then pids+=("$pid"); fi
    done
    stop_pids "$first" "$((STOP_TIMEOUT + 5))" "${pids[@]}"
    # 3. whatever of ours is left (partial start: shells, helpers; epmd last)
    local epmd
    epmd=$(epmd_pid || true)
    pids=()
    while read -r pid; do
        [[ $pid == "$epmd" ]] || pids+=("$pid")
    done < <(tagged_pids)
    stop_pids "$first" 2 "${pids[@]}"
    if [[ -n $epmd ]]; then stop_pids KILL 2 "$epmd"; fi
    pids=()
    while read -r pid; do pids+=("$pid"); done < <(tagged_pids)
    if [[ ${#pids[@]} -gt 0 ]]; then stop_pids KILL 2 "${pids[@]}"; fi
}

cmd_down() {
    local first=TERM
    case ${1:-} in
    "") ;;
    --kill) first=KILL ;;
    *) usage ;;
    esac
    if [[ ! -d $CLUSTER_DIR ]]; then
        log "nothing to stop ($CLUSTER_DIR does not exist)"
        return 0
    fi
    lock
    load_settings
    local t0
    t0=$(now_ms)
    if ! any_alive; then
        log "nothing running in $CLUSTER_DIR"
        return 0
    fi
    do_down "$first"
    local left
    left=$(tagged_pids | tr '\n' ' ')
    [[ -z $left ]] || die "still running after down: $left"
    log "$(printf '%-34s %6d ms' "down total" $(($(now_ms) - t0)))"
}

state() { if [[ -n $1 ]]; then echo alive; else echo dead; fi; }

cmd_status() {
    load_settings
    local i pid leader rest http
    printf 'cluster dir %s\n' "$CLUSTER_DIR"
    pid=$(epmd_pid || true)
    printf '%-9s pid %-8s port %s  %s\n' epmd "${pid:--}" "$EPMD_PORT" "$(state "$pid")"
    for ((i = 1; i <= NODES; i++)); do
        pid=$(rabbit_pid "$i" || true)
        printf '%-9s pid %-8s %s amqp %s dist %s  %s\n' "rabbit-$i" "${pid:--}" \
            "$(rabbit_node "$i")" "$(amqp_port "$i")" "$(dist_port "$i")" "$(state "$pid")"
    done
    leader=$(consul_leader_index)
    for ((i = 1; i <= NODES; i++)); do
        pid=$(consul_pid "$i" || true)
        printf '%-9s pid %-8s http %s serf-lan %s serf-wan %s server %s grpc %s dns %s  %s%s\n' \
            "consul-$i" "${pid:--}" "$(consul_http "$i")" "$(consul_lan "$i")" \
            "$(consul_wan "$i")" "$(consul_server "$i")" "$(consul_grpc "$i")" \
            "$(consul_dns "$i")" "$(state "$pid")" "$([[ $leader == "$i" ]] && echo ' (leader)')"
    done
    while read -r i; do
        pid=$(host_pid "$i" || true)
        rest="" http=""
        read -r rest http < <(host_ports "$i") || true
        printf '%-9s pid %-8s rest 127.0.0.1:%s http 127.0.0.1:%s  %s\n' "host-$i" "${pid:--}" \
            "${rest:-?}" "${http:-?}" "$(state "$pid")"
    done < <(host_indices)
}

cmd_kill_rabbit() {
    check_index "${1:-}"
    load_settings
    lock
    local pid
    pid=$(rabbit_pid "$1") || die "RabbitMQ node $1 is not running"
    stop_pids KILL 5 "$pid"
    log "killed RabbitMQ node $1 ($(rabbit_node "$1"), beam.smp pid $pid)"
}

cmd_restart_rabbit() {
    check_index "${1:-}"
    local n=$1 i want=1 t0 deadline
    load_settings
    lock
    t0=$(now_ms)
    [[ -d $(rabbit_dir "$n")/mnesia ]] || die "node $n has no data in $(rabbit_dir "$n"): use up"
    if rabbit_pid "$n" >/dev/null; then die "RabbitMQ node $n is running already"; fi
    # leftovers of a killed node (its shell) must not hold anything
    local -a left=()
    mapfile -t left < <(rabbit_any_pids "$n")
    if [[ ${#left[@]} -gt 0 ]]; then stop_pids KILL 2 "${left[@]}"; fi
    load_used_ports
    require_free "RabbitMQ $n AMQP" "$(amqp_port "$n")"
    require_free "RabbitMQ $n distribution" "$(dist_port "$n")"
    ensure_erl_home
    ensure_epmd
    for ((i = 1; i <= NODES; i++)); do
        if ((i != n)) && rabbit_pid "$i" >/dev/null; then want=$((want + 1)); fi
    done
    launch_rabbit "$n"
    deadline=$((SECONDS + RABBIT_TIMEOUT))
    wait_rabbit_port "$n" "$deadline" || die "RabbitMQ node $n did not start"
    ctl "$n" -q await_startup >/dev/null || die "RabbitMQ node $n did not finish booting"
    wait_running "$n" "$want" "$deadline" || die "node $n did not rejoin ($want nodes expected)"
    log "RabbitMQ node $n ($(rabbit_node "$n")) up again, $want nodes running, in $(($(now_ms) - t0)) ms"
}

cmd_queue_leader() {
    local queue="" vhost=/
    while [[ $# -gt 0 ]]; do
        case $1 in
        --vhost | -p) vhost=${2:?--vhost needs a value}; shift 2 ;;
        *) [[ -z $queue ]] || usage; queue=$1; shift ;;
        esac
    done
    [[ -n $queue ]] || usage
    load_settings
    local i out line name leader pid pid_re='^<(.+)\.[0-9]+\.[0-9]+\.[0-9]+>$'
    for ((i = 1; i <= NODES; i++)); do
        rabbit_pid "$i" >/dev/null || continue
        out=$(ctl "$i" -q list_queues -p "$vhost" name leader pid --no-table-headers 2>/dev/null) || continue
        while IFS= read -r line; do
            # TAB-separated; a classic queue's leader column is empty (read would merge tabs)
            name=${line%%$'\t'*}
            line=${line#*$'\t'}
            leader=${line%%$'\t'*}
            pid=${line#*$'\t'}
            if [[ $name == "$queue" ]]; then
                # a quorum (or stream) queue has a leader; a classic one lives on the node of
                # its process, <NODE.X.Y.Z>
                if [[ -z $leader && $pid =~ $pid_re ]]; then
                    leader=${BASH_REMATCH[1]}
                fi
                [[ -n $leader ]] || die "queue '$queue' has no leader now"
                rabbit_index_of "$leader" || die "leader $leader is not one of this cluster's nodes"
                return 0
            fi
        done <<<"$out"
        die "no queue '$queue' in vhost '$vhost'"
    done
    die "no RabbitMQ node of the cluster is running"
}

cmd_kill_consul() {
    check_index "${1:-}"
    load_settings
    lock
    local pid
    pid=$(consul_pid "$1") || die "Consul server $1 is not running"
    stop_pids KILL 5 "$pid"
    log "killed Consul server $1 (pid $pid)"
}

cmd_restart_consul() {
    check_index "${1:-}"
    local n=$1 t0
    load_settings
    lock
    t0=$(now_ms)
    [[ -d $(consul_dir "$n")/data ]] || die "Consul server $n has no data dir: use up"
    if consul_pid "$n" >/dev/null; then die "Consul server $n is running already"; fi
    find_consul
    load_used_ports
    require_free "Consul $n HTTP" "$(consul_http "$n")"
    require_free "Consul $n serf LAN" "$(consul_lan "$n")"
    require_free "Consul $n server RPC" "$(consul_server "$n")"
    launch_consul "$n"
    wait_consul $((SECONDS + CONSUL_TIMEOUT)) "$n" || die "Consul server $n did not rejoin"
    log "Consul server $n up again (leader: server $(consul_leader_index)), in $(($(now_ms) - t0)) ms"
}

cmd_consul_leader() {
    load_settings
    local l
    l=$(consul_leader_index)
    [[ -n $l ]] || die "no Consul leader (no server answers with a leader)"
    echo "$l"
}

cmd_kill_host() {
    check_index "${1:-}" any
    load_settings
    lock
    local pid
    pid=$(host_pid "$1") || die "wasmeca host $1 is not running"
    stop_pids KILL 5 "$pid"
    log "killed wasmeca host $1 (pid $pid)"
}

cmd_start_host() {
    check_index "${1:-}" any
    load_settings
    lock
    [[ -r $CONF_FILE ]] || die "no cluster in $CLUSTER_DIR: use up"
    if host_pid "$1" >/dev/null; then die "wasmeca host $1 is running already"; fi
    resolve_wasmeca_bin
    launch_host "$1" || die "wasmeca host $1 did not start"
    log "wasmeca host $1 started (pid $(host_pid "$1"))"
}

# cmd_cli TOOL N ARGS...: a RabbitMQ CLI tool against node N.
cmd_cli() {
    local tool=$1
    shift
    check_index "${1:-}"
    load_settings
    local n=$1
    shift
    rmq_cli "$tool" -n "$(rabbit_node "$n")" "$@"
}

cmd_clean() {
    cmd_down
    exec 9>&-
    rm -rf "$CLUSTER_DIR"
    log "removed $CLUSTER_DIR"
}

main() {
    local cmd=${1:-}
    if [[ $# -gt 0 ]]; then shift; fi
    case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) [[ $# -eq 0 ]] || usage; cmd_status ;;
    env) [[ $# -eq 0 ]] || usage; load_settings; cmd_env ;;
    kill-rabbit) cmd_kill_rabbit "$@" ;;
    restart-rabbit) cmd_restart_rabbit "$@" ;;
    queue-leader) cmd_queue_leader "$@" ;;
    ctl) cmd_cli rabbitmqctl "$@" ;;
    diagnostics) cmd_cli rabbitmq-diagnostics "$@" ;;
    queues) cmd_cli rabbitmq-queues "$@" ;;
    kill-consul) cmd_kill_consul "$@" ;;
    restart-consul) cmd_restart_consul "$@" ;;
    consul-leader) [[ $# -eq 0 ]] || usage; cmd_consul_leader ;;
    kill-host) cmd_kill_host "$@" ;;
    start-host) cmd_start_host "$@" ;;
    clean) [[ $# -eq 0 ]] || usage; cmd_clean ;;
    -h | --help | help | *) usage ;;
    esac
}

main "$@"
