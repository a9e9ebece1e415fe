#!/usr/bin/env bash
# Shared by start-head.sh, start-worker.sh and stop.sh; sourced, not run.
#
# How a node is tracked: each start script runs `ray start` in a new session (setsid), so every
# process of that Ray node (GCS, raylet, dashboard, agents, workers, actors) carries the same
# session id (SID). Job drivers started by `ray job submit` get their own session but stay
# descendants of the node's processes. The script records the SID, the node's own temp dir
# and the raylet's PID in a state file. stop.sh signals exactly that SID plus its descendants,
# after checking that the session still holds a raylet whose command line names the recorded
# temp dir, so it never touches another Ray instance on the host (`ray stop` would stop all).
set -euo pipefail

# Where state files and default temp dirs live: short (Ray's socket paths must stay under 107
# bytes) and per user.
COAGENTS_RAY_STATE_DIR="${COAGENTS_RAY_STATE_DIR:-/tmp/coagents-ray-$(id -u)}"
# Longest temp dir accepted: Ray appends session_<date>_<time>_<micros>_<pid>/sockets/plasma_store
# (up to 64 characters) and a Unix socket path cannot exceed 107 bytes.
MAX_TEMP_DIR_LENGTH=40

die() {
    echo "$(basename "$0"): error: $*" >&2
    exit 1
}

note() {
    echo "$(basename "$0"): $*" >&2
}

need_value() {  # OPTION [VALUE...]: the arguments of the option parser, from the option on
    if (($# < 2)) || [[ -z "$2" ]]; then
        die "$1 needs a value (see --help)"
    fi
}

require_commands() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found on PATH"
    done
}

require_int() {  # NAME VALUE
    [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a non-negative integer, got '$2'"
}

require_name() {  # NAME VALUE: a node name is used in file names
    [[ "$2" =~ ^[A-Za-z0-9._-]+$ ]] || die "$1 must use only letters, digits, '.', '_' and '-', got '$2'"
}

state_file() {  # NAME
    echo "$COAGENTS_RAY_STATE_DIR/$1.env"
}

# Read one key of a state file (KEY=VALUE lines; never sourced, so never executed).
state_get() {  # FILE KEY
    local line
    while IFS= read -r line || [[ -n "$line" ]]; do
        if [[ "$line" == "$2="* ]]; then
            echo "${line#*=}"
            return 0
        fi
    done <"$1"
    return 1
}

# Whether Ray will find an authentication token (the sources Ray 2.60 reads).
token_source() {
    if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
        echo "the RAY_AUTH_TOKEN environment variable"
    elif [[ -n "${RAY_AUTH_TOKEN_PATH:-}" && -f "${RAY_AUTH_TOKEN_PATH}" ]]; then
        echo "the file $RAY_AUTH_TOKEN_PATH (RAY_AUTH_TOKEN_PATH)"
    elif [[ -f "$HOME/.ray/auth_token" ]]; then
        echo "the file ~/.ray/auth_token"
    else
        return 1
    fi
}

check_temp_dir() {  # DIR
    [[ "$1" == /* ]] || die "the temp dir must be an absolute path, got '$1'"
    if ((${#1} > MAX_TEMP_DIR_LENGTH)); then
        die "temp dir '$1' is ${#1} characters long; Ray's socket paths need it at most" \
            "$MAX_TEMP_DIR_LENGTH (choose a shorter --temp-dir or COAGENTS_RAY_STATE_DIR)"
    fi
}

# "PID PPID SID ARGS" for every process, full command lines.
process_table() {
    ps -ww -eo pid=,ppid=,sid=,args=
}

# PIDs of the processes in session SID and of all their descendants.
session_tree() {  # SID
    process_table | awk -v sid="$1" '
        { pid[NR] = $1; ppid[NR] = $2; if ($3 == sid) mine[$1] = 1 }
        END {
            do {
                grew = 0
                for (i = 1; i <= NR; i++)
                    if (!(pid[i] in mine) && (ppid[i] in mine)) { mine[pid[i]] = 1; grew = 1 }
            } while (grew)
            for (p in mine) print p
        }'
}

# PID of the raylet whose command line names TEMP_DIR (optionally only in session SID).
find_raylet() {  # TEMP_DIR [SID]
    process_table | awk -v dir="$1/session_" -v sid="${2:-}" '
        (sid == "" || $3 == sid) && $4 ~ /\/raylet\/raylet$/ && index($0, dir) { print $1; exit }'
}

# PIDs (of PID_LIST) still alive and not zombies.
alive() {
    local pid state
    for pid in "$@"; do
        state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
        [[ -n "$state" && "$state" != Z* ]] && echo "$pid"
    done
    return 0
}

# Terminate PIDs gently, then for good: SIGTERM, wait up to GRACE seconds, SIGKILL what is left.
terminate() {  # GRACE PID...
    local grace=$1 waited=0 left
    shift
    (($# > 0)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    while left=$(alive "$@") && [[ -n "$left" ]] && ((waited < grace * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if [[ -n "$left" ]]; then
        # shellcheck disable=SC2086  # one PID per word
        kill -KILL $left 2>/dev/null || true
        waited=0
        # shellcheck disable=SC2086
        while left=$(alive $left) && [[ -n "$left" ]] && ((waited < 50)); do
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
    [[ -z "$left" ]]
}

# How to stop node NAME, as a command line the user can paste.
stop_command() {  # NAME
    echo "$(dirname "$0")/stop.sh --name $1"
}

# Ray's `ray start` output in LOG, except its advice to run `ray stop`, which stops every Ray
# instance of this user on the host: that advice becomes the command that stops node NAME only.
# Every other line (errors included) is shown as it is. Ray 2.60 writes, when its output is not
# a terminal, "DATE TIME LEVEL FILE:LINE -- MESSAGE" lines with ANSI colors in MESSAGE.
show_ray_output() {  # NAME LOG
    awk -v stop="$(stop_command "$1")" '
        {
            plain = $0
            gsub(/\033\[[0-9;]*m/, "", plain)
            msg = plain
            sub(/^[0-9][0-9-]* [0-9:,.]+[ \t]+[A-Z]+[ \t]+[^ \t]+ -- /, "", msg)
            prefix = substr(plain, 1, length(plain) - length(msg))
        }
        msg ~ /^[ \t]*To terminate the Ray runtime, run[ \t]*$/ {
            print prefix "To stop this node only (not with \"ray stop\", which stops every Ray" \
                " instance of this user on this machine), run"
            next
        }
        msg ~ /^[ \t]*ray stop[ \t]*$/ { print prefix "  " stop; next }
        { print }' "$2"
}

# Start `ray start ARGS...` in a new session and record the node as NAME. Sets NODE_IP and
# NODE_SID. Ray's own output goes to TEMP_DIR/ray-start.log and is then printed.
start_node() {  # NAME ROLE TEMP_DIR RAY_ARGS...
    local name=$1 role=$2 temp_dir=$3 rc=0 pid raylet="" log leftovers
    shift 3
    mkdir -p "$COAGENTS_RAY_STATE_DIR" "$temp_dir"
    chmod 700 "$COAGENTS_RAY_STATE_DIR" "$temp_dir" 2>/dev/null || true
    log="$temp_dir/ray-start.log"

    # A background job of a script is not a process-group leader, so setsid does not fork:
    # $! is the new session's id. Output goes to a file so that no Ray daemon keeps our stdout.
    setsid ray start "$@" </dev/null >"$log" 2>&1 &
    pid=$!
    wait "$pid" || rc=$?
    show_ray_output "$name" "$log"

    if ((rc == 0)); then  # the raylet of this node is the one whose command line names our temp dir
        for _ in $(seq 1 50); do
            raylet=$(find_raylet "$temp_dir")
            [[ -n "$raylet" ]] && break
            sleep 0.1
        done
    fi
    if ((rc != 0)) || [[ -z "$raylet" ]]; then
        leftovers=$(session_tree "$pid")  # whatever this failed start left behind, nothing else
        # shellcheck disable=SC2086  # one PID per word
        [[ -z "$leftovers" ]] || terminate 5 $leftovers || true
        die "ray start failed (exit code $rc); Ray's logs: $temp_dir/session_latest/logs"
    fi
    NODE_SID=$(ps -o sid= -p "$raylet" | tr -d ' ')
    if [[ "$NODE_SID" == "$(ps -o sid= -p $$ | tr -d ' ')" ]]; then
        die "ray start did not run in a session of its own (setsid failed)"
    fi
    NODE_IP=$(process_table | awk -v p="$raylet" '$1 == p' | grep -o -- '--node_ip_address=[^ ]*' \
        | head -n 1 | cut -d= -f2 || true)
    {
        echo "# written by $(basename "$0"); read by stop.sh (never executed)"
        echo "name=$name"
        echo "role=$role"
        echo "sid=$NODE_SID"
        echo "raylet_pid=$raylet"
        echo "temp_dir=$temp_dir"
        echo "node_ip=$NODE_IP"
        echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$(state_file "$name")"
}

# Whether the node recorded in FILE is running; prints its SID. Stale files are reported.
node_running() {  # FILE
    local sid temp_dir
    sid=$(state_get "$1" sid) || return 1
    temp_dir=$(state_get "$1" temp_dir) || return 1
    [[ -n "$(find_raylet "$temp_dir" "$sid")" ]] || return 1
    echo "$sid"
}

# Refuse to start a node whose name is already running; forget a stale record.
claim_name() {  # NAME
    local state
    state=$(state_file "$1")
    [[ -f "$state" ]] || return 0
    if node_running "$state" >/dev/null; then
        die "a node named '$1' is already running (see $state); stop it with" \
            "'$(stop_command "$1")' or choose another --name"
    fi
    rm -f "$state"
}
