#!/usr/bin/env bash
# Real Consul agent (Debian 11 "bullseye" package, Consul 1.8.7) for wasmeca's tests.
#
#   consul.sh install
#       Idempotent. Downloads the bullseye `consul` .deb with a private apt setup (the system's
#       own Debian mirror URI, suite bullseye, component main; nothing under /etc/apt or the
#       system's apt lists/cache is changed or locked), extracts it into
#       <repo>/target/tools/consul/ and prints the binary path.
#
#   consul.sh start [--http-port P] [--data-dir D] [--node NAME] [--persist] [-- AGENT_ARGS...]
#       Installs if needed, starts `consul agent -dev` bound to 127.0.0.1 in the background with
#       free ports for every listener (serf lan/wan, server RPC, DNS, gRPC), waits (up to
#       CONSUL_START_TIMEOUT, default 20 s) for a leader and prints on stdout:
#           CONSUL_HTTP_ADDR=http://127.0.0.1:P
#           CONSUL_PID=<pid>
#       and writes <data-dir>/consul.pid, consul.log and consul.env (those lines and the ports).
#       Defaults: port 8500 if free (else a free one), data dir
#       <repo>/target/tools/consul-data/<port>. If the agent named by the arguments is already
#       running, prints its two lines again. For several agents at once give each its own
#       --data-dir or --http-port. Like any `consul agent -dev`, the agent keeps no state:
#       registrations are gone after a restart. --persist passes -data-dir <data-dir>/state, and
#       then the agent restores the services and checks registered through it on restart (the
#       catalog and KV still live in memory only). AGENT_ARGS go to `consul agent` as they are
#       (e.g. -hcl 'acl { enabled = true ... }').
#
#   consul.sh stop [--data-dir D | --http-port P | --all]
#       Stops the agent started with that data dir (default: the 8500 one if it has a pid file,
#       else the only running agent under <repo>/target/tools/consul-data/). Idempotent.
#
# Environment: CONSUL_DEB_MIRROR overrides the mirror URI taken from the system's apt sources.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
TOOLS_DIR=$REPO_ROOT/target/tools
CONSUL_ROOT=$TOOLS_DIR/consul
CONSUL_BIN=$CONSUL_ROOT/usr/bin/consul
DATA_ROOT=$TOOLS_DIR/consul-data
DEB_SUITE=bullseye
DEB_COMPONENT=main
DEB_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
START_TIMEOUT=${CONSUL_START_TIMEOUT:-20}

log() { printf 'consul.sh: %s\n' "$*" >&2; }
die() {
    printf 'consul.sh: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# install

consul_works() {
    [[ -x $CONSUL_BIN ]] && "$CONSUL_BIN" version >/dev/null 2>&1
}

# Prints the URI of the system's main Debian mirror (not the security one).
system_mirror() {
    if [[ -n ${CONSUL_DEB_MIRROR:-} ]]; then
        printf '%s\n' "${CONSUL_DEB_MIRROR%/}"
        return 0
    fi
    local uri="" f=/etc/apt/sources.list.d/debian.sources
    if [[ -r $f ]]; then
        # deb822 stanzas: the first "Types: deb" stanza whose Suites are not *-security.
        uri=$(awk '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    key = tolower(line); sub(/:.*/, "", key)
                    val = line; sub(/^[^:]*:[ \t]*/, "", val)
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                }
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && uris != "" && suites !~ /-security/) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f")
    fi
    if [[ -z $uri ]]; then
        # One-line format: "deb [options] URI suite components".
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                    if ($(i + 1) !~ /-security/) { print $i; exit }
                }') || true
    fi
    [[ -n $uri ]] || return 1
    printf '%s\n' "${uri%/}"
}

do_install() {
    local mirror work stage deb apt_conf
    command -v apt-get >/dev/null || die "apt-get not found: this needs a Debian machine"
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
    [[ -r $DEB_KEYRING ]] ||
        die "Debian archive keyring $DEB_KEYRING is missing (package debian-archive-keyring)"
    mirror=$(system_mirror) ||
        die "no Debian mirror URI found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list (set CONSUL_DEB_MIRROR)"

    work=$TOOLS_DIR/.consul-apt
    stage=$TOOLS_DIR/.consul-stage
    rm -rf "$work" "$stage"
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/state" \
        "$work/etc/empty" "$work/deb"
    : >"$work/state/status"
    printf 'deb [signed-by=%s] %s %s %s\n' "$DEB_KEYRING" "$mirror" "$DEB_SUITE" "$DEB_COMPONENT" \
        >"$work/etc/sources.list"

    # apt reads $APT_CONFIG before /etc/apt/apt.conf.d, so pointing Dir::Etc::parts and ::main at
    # an empty private dir here keeps the system's apt hooks (e.g. a docker-clean Post-Invoke that
    # runs "rm /var/cache/apt/*.bin") and extra index targets out of this private run. The
    # status file is an empty private one: nothing of the system's dpkg state is read or locked.
    apt_conf=$work/etc/apt.conf
    cat >"$apt_conf" <<CONF
Dir::Etc::parts "$work/etc/empty";
Dir::Etc::main "$work/etc/empty/none.conf";
Dir::Etc::sourcelist "$work/etc/sources.list";
Dir::Etc::sourceparts "-";
Dir::Etc::preferences "$work/etc/empty/preferences";
Dir::Etc::preferencesparts "$work/etc/empty";
Dir::State "$work/state";
Dir::State::Lists "$work/lists";
Dir::State::status "$work/state/status";
Dir::Cache "$work/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "$(id -un)";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
Acquire::Retries "2";
Acquire::http::Timeout "30";
CONF
    local -a apt_opts=(
        -q
        -o "Dir::Etc::sourcelist=$work/etc/sources.list"
        -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$work/lists"
        -o "Dir::Cache=$work/cache"
        -o "Dir::State::status=$work/state/status"
    )

    log "fetching the $DEB_SUITE/$DEB_COMPONENT package index from $mirror (private apt state in $work)"
    if ! APT_CONFIG=$apt_conf apt-get "${apt_opts[@]}" update >"$work/update.log" 2>&1; then
        sed 's/^/    /' "$work/update.log" >&2
        die "apt-get update against $mirror ($DEB_SUITE) failed: is the mirror reachable?"
    fi
    # apt-get update exits 0 when a fetch fails, so look for the index itself.
    if ! compgen -G "$work/lists/*_dists_${DEB_SUITE}_${DEB_COMPONENT}_binary-*_Packages*" >/dev/null; then
        sed 's/^/    /' "$work/update.log" >&2
        die "could not download the $DEB_SUITE package index from $mirror: is the mirror reachable from this machine?"
    fi

    log "downloading the consul package"
    if ! (cd "$work/deb" && APT_CONFIG=$apt_conf apt-get "${apt_opts[@]}" download consul) \
        >"$work/download.log" 2>&1; then
        sed 's/^/    /' "$work/download.log" >&2
        die "apt-get download consul ($mirror $DEB_SUITE) failed"
    fi
    deb=$(compgen -G "$work/deb/consul_*.deb" | head -n 1) || true
    [[ -n $deb ]] || die "apt-get download consul left no .deb in $work/deb"

    dpkg-deb -x "$deb" "$stage" || die "dpkg-deb -x $deb failed"
    "$stage/usr/bin/consul" version >/dev/null 2>&1 ||
        die "the extracted $stage/usr/bin/consul does not run"
    rm -rf "$CONSUL_ROOT"
    mv "$stage" "$CONSUL_ROOT"
    rm -rf "$work"
    log "installed $(basename "$deb"): $("$CONSUL_BIN" version | head -n 1)"
}

cmd_install() {
    [[ $# -eq 0 ]] || usage
    if ! consul_works; then
        mkdir -p "$TOOLS_DIR"
        # Serialise concurrent installs (parallel test processes).
        exec 8>"$TOOLS_DIR/.consul-install.lock"
        flock -w 600 8 || die "timed out waiting for another consul install"
        consul_works || do_install
        exec 8>&-
    fi
    printf '%s\n' "$CONSUL_BIN"
}

# ---------------------------------------------------------------------------------------------
# ports

declare -A USED_PORTS=()

# Every local port any TCP or UDP socket (v4 or v6, any state) uses now.
load_used_ports() {
    local f sl addr rem st
    USED_PORTS=()
    for f in /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; do
        [[ -r $f ]] || continue
        while read -r sl addr rem st _; do
            [[ $sl == *: && $addr =~ :([0-9A-Fa-f]{4})$ ]] || continue
            # TCP: only listening sockets hold a port against a new listener (Consul binds
            # with SO_REUSEADDR, so connections of a stopped agent in TIME_WAIT do not).
            [[ $f == */udp* || $st == 0A ]] || continue
            USED_PORTS[$((16#${BASH_REMATCH[1]}))]=1
        done <"$f"
    done
}

port_free() { [[ -z ${USED_PORTS[$1]:-} ]]; }

# Sets PORT to a port no socket uses and reserves it for this run (not for use in $(...):
# the reservation has to stay in this shell).
PORT=
pick_port() {
    local tries=0
    while ((tries++ < 1000)); do
        PORT=$((20000 + (RANDOM * 32768 + RANDOM) % 12000)) # below the ephemeral range
        if port_free "$PORT"; then
            USED_PORTS[$PORT]=1
            return 0
        fi
    done
    die "no free port found"
}

# ---------------------------------------------------------------------------------------------
# agents

# True if $1 is a live consul agent started by this script for data dir $2 (guards against pid
# reuse: our agents run with "-pid-file <dir>/consul.pid").
is_agent() {
    local pid=$1 dir=$2
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$dir/consul.pid"
}

agent_pid() {
    local dir=$1 pid
    [[ -r $dir/consul.pid ]] || return 1
    pid=$(tr -dc '0-9' <"$dir/consul.pid")
    is_agent "$pid" "$dir" || return 1
    printf '%s\n' "$pid"
}

abs_path() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

# launch DIR HTTP_PORT NODE PERSIST [AGENT_ARGS...]: sets AGENT_PID once a leader is elected;
# returns 1 (agent gone) otherwise.
AGENT_PID=
launch() {
    local dir=$1 http=$2 node=$3 persist=$4
    shift 4
    local dns serf_lan serf_wan server grpc pid leader deadline
    pick_port && dns=$PORT
    pick_port && serf_lan=$PORT
    pick_port && serf_wan=$PORT
    pick_port && server=$PORT
    pick_port && grpc=$PORT
    local -a args=(
        agent -dev
        -client 127.0.0.1 -bind 127.0.0.1
        -http-port "$http" -dns-port "$dns" -grpc-port "$grpc"
        -serf-lan-port "$serf_lan" -serf-wan-port "$serf_wan" -server-port "$server"
        -pid-file "$dir/consul.pid"
        -log-level info
    )
    if [[ -n $node ]]; then args+=(-node "$node"); fi
    if [[ $persist == 1 ]]; then
        mkdir -p "$dir/state"
        args+=(-data-dir "$dir/state")
    fi
    args+=("$@")

    rm -f "$dir/consul.pid" "$dir/consul.env"
    {
        printf '==> %s' "$CONSUL_BIN"
        printf ' %q' "${args[@]}"
        printf '\n'
    } >>"$dir/consul.log"
    # Own session (outlives this script and its caller's terminal); no stdio or lock fds
    # inherited, so a caller capturing our output with $(...) does not wait for the agent.
    setsid "$CONSUL_BIN" "${args[@]}" </dev/null >>"$dir/consul.log" 2>&1 8>&- 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$dir/consul.pid"

    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            rm -f "$dir/consul.pid"
            return 1
        fi
        # A -dev agent is its own single server, so the leader it reports is its own server
        # port: this also proves that the listener on $http is this agent.
        leader=$(curl -fs --max-time 1 "http://127.0.0.1:$http/v1/status/leader" 2>/dev/null) || true
        if [[ $leader == "\"127.0.0.1:$server\"" ]]; then
            break
        fi
        if ((SECONDS >= deadline)); then
            log "no leader after ${START_TIMEOUT}s; killing pid $pid"
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            rm -f "$dir/consul.pid"
            return 1
        fi
        sleep 0.1
    done
    printf '%s\n' "$pid" >"$dir/consul.pid"
    cat >"$dir/consul.env" <<ENV
CONSUL_HTTP_ADDR=http://127.0.0.1:$http
CONSUL_PID=$pid
CONSUL_HTTP_PORT=$http
CONSUL_DNS_PORT=$dns
CONSUL_GRPC_PORT=$grpc
CONSUL_SERF_LAN_PORT=$serf_lan
CONSUL_SERF_WAN_PORT=$serf_wan
CONSUL_SERVER_PORT=$server
CONSUL_DATA_DIR=$dir
ENV
    AGENT_PID=$pid
}

cmd_start() {
    local http="" dir="" node="" persist=0
    local -a extra=()
    while [[ $# -gt 0 ]]; do
        case $1 in
        --http-port) http=${2:?--http-port needs a value}; shift 2 ;;
        --http-port=*) http=${1#*=}; shift ;;
        --data-dir) dir=${2:?--data-dir needs a value}; shift 2 ;;
        --data-dir=*) dir=${1#*=}; shift ;;
        --node) node=${2:?--node needs a value}; shift 2 ;;
        --node=*) node=${1#*=}; shift ;;
        --persist) persist=1; shift ;;
        --) shift; extra=("$@"); break ;;
        *) usage ;;
        esac
    done
    [[ -z $http || $http =~ ^[0-9]+$ ]] || die "--http-port must be a number"
    local explicit_http=$http
    if [[ -n $dir ]]; then dir=$(abs_path "$dir"); fi

    cmd_install >/dev/null
    command -v curl >/dev/null || die "curl not found"
    command -v setsid >/dev/null || die "setsid not found (util-linux)"
    # One start at a time: port choice and launch are then race-free among our own agents.
    exec 9>"$TOOLS_DIR/.consul-start.lock"
    flock -w 120 9 || die "timed out waiting for another consul.sh start"

    # The agent these arguments name is running already: print it again.
    local want pid
    want=$(abs_path "${dir:-$DATA_ROOT/${http:-8500}}")
    if pid=$(agent_pid "$want"); then
        [[ -r $want/consul.env ]] || die "an agent (pid $pid) is already running with data dir $want"
        log "agent for $want already running"
        grep -E '^CONSUL_(HTTP_ADDR|PID)=' "$want/consul.env"
        return 0
    fi

    local attempt d="" t0
    for attempt in 1 2 3; do
        load_used_ports
        if [[ -n $explicit_http ]]; then
            port_free "$http" || die "http port $http is already in use"
        elif [[ $attempt == 1 ]] && port_free 8500; then
            http=8500
        else
            pick_port
            http=$PORT
        fi
        USED_PORTS[$http]=1
        d=$(abs_path "${dir:-$DATA_ROOT/$http}")
        if agent_pid "$d" >/dev/null; then
            die "an agent is already running with data dir $d"
        fi

        t0=$(date +%s%N)
        if launch "$d" "$http" "$node" "$persist" "${extra[@]}"; then
            log "agent up, leader elected, in $((($(date +%s%N) - t0) / 1000000)) ms; data dir $d, log $d/consul.log"
            printf 'CONSUL_HTTP_ADDR=http://127.0.0.1:%s\nCONSUL_PID=%s\n' "$http" "$AGENT_PID"
            return 0
        fi
        log "attempt $attempt failed; last lines of $d/consul.log:"
        tail -n 15 "$d/consul.log" | sed 's/^/    /' >&2
        # Retry with new ports only if another process took one of ours meanwhile.
        grep -q 'address already in use' <(tail -n 40 "$d/consul.log") || break
    done
    die "the consul agent did not start (see $d/consul.log)"
}

# ---------------------------------------------------------------------------------------------
# stop

stop_dir() {
    local dir=$1 pid i
    if ! pid=$(agent_pid "$dir"); then
        rm -f "$dir/consul.pid" "$dir/consul.env"
        log "no running agent for $dir"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running 10 s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/consul.pid" "$dir/consul.env"
    log "stopped consul pid $pid ($dir)"
}

running_dirs() {
    local f d
    for f in "$DATA_ROOT"/*/consul.pid; do
        [[ -e $f ]] || continue
        d=${f%/consul.pid}
        if agent_pid "$d" >/dev/null; then printf '%s\n' "$d"; fi
    done
}

cmd_stop() {
    local dir="" all=0
    while [[ $# -gt 0 ]]; do
        case $1 in
        --data-dir) dir=${2:?--data-dir needs a value}; shift 2 ;;
        --data-dir=*) dir=${1#*=}; shift ;;
        --http-port) dir=$DATA_ROOT/${2:?--http-port needs a value}; shift 2 ;;
        --http-port=*) dir=$DATA_ROOT/${1#*=}; shift ;;
        --all) all=1; shift ;;
        *) usage ;;
        esac
    done
    if [[ $all == 1 ]]; then
        local d
        while read -r d; do stop_dir "$d"; done < <(running_dirs)
        return 0
    fi
    if [[ -z $dir ]]; then
        if [[ -e $DATA_ROOT/8500/consul.pid ]]; then
            dir=$DATA_ROOT/8500
        else
            local -a dirs
            mapfile -t dirs < <(running_dirs)
            case ${#dirs[@]} in
            0) log "no running agent under $DATA_ROOT"; return 0 ;;
            1) dir=${dirs[0]} ;;
            *) die "several agents are running (${dirs[*]}): use --data-dir, --http-port or --all" ;;
            esac
        fi
    fi
    if [[ ! -d $dir ]]; then
        log "no such data dir: $dir"
        return 0
    fi
    stop_dir "$(cd "$dir" && pwd)"
}

main() {
    local cmd=${1:-}
    if [[ $# -gt 0 ]]; then shift; fi
    case $cmd in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) usage ;;
    esac
}

main "$@"
