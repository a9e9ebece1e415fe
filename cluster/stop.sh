#!/usr/bin/env bash
# Stop the Ray nodes that start-head.sh / start-worker.sh started on this machine, and only
# those: never `ray stop`, which stops every Ray process on the host (other users' clusters,
# other projects' `ray.init()`). See common.sh for how a node is tracked.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--name NAME]... [--grace SECONDS] [--clean] [--list]

Stop Ray nodes started on this machine by start-head.sh or start-worker.sh: every recorded node
(workers first), or only those named with --name. Each node is stopped like 'ray stop' does
it (raylet first, GCS last; SIGTERM, then SIGKILL after the grace period), but only within the
session that its start script created, plus that session's descendants (e.g. job drivers).
A record whose session no longer holds that node's raylet is dropped without killing anything.

Options:
  --name NAME      stop only this node (repeatable); names are listed by --list
  --grace SECONDS  how long each step waits before SIGKILL           [COAGENTS_RAY_GRACE, 10]
  --clean          also delete the node's temp dir (logs) afterwards
  --list           list the recorded nodes and whether they run; stop nothing
  -h, --help       show this help

State files are read from COAGENTS_RAY_STATE_DIR (now $COAGENTS_RAY_STATE_DIR).
EOF
}

NAMES=()
GRACE="${COAGENTS_RAY_GRACE:-10}"
CLEAN=0
LIST=0
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --name) need_value "$@"; NAMES+=("$2"); shift 2 ;;
        --grace) need_value "$@"; GRACE="$2"; shift 2 ;;
        --clean) CLEAN=1; shift ;;
        --list) LIST=1; shift ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
require_int --grace "$GRACE"
require_commands ps awk

# The state files to act on: the named ones, or all of them with workers before heads.
FILES=()
if ((${#NAMES[@]} > 0)); then
    for name in "${NAMES[@]}"; do
        require_name --name "$name"
        [[ -f "$(state_file "$name")" ]] || die "no node named '$name' recorded in $COAGENTS_RAY_STATE_DIR"
        FILES+=("$(state_file "$name")")
    done
elif [[ -d "$COAGENTS_RAY_STATE_DIR" ]]; then
    for role in worker head; do
        for file in "$COAGENTS_RAY_STATE_DIR"/*.env; do
            [[ -f "$file" ]] && [[ "$(state_get "$file" role || true)" == "$role" ]] && FILES+=("$file")
        done
    done
fi

if ((LIST)); then
    if ((${#FILES[@]} == 0)); then
        echo "no node started by this kit is running here (none recorded in $COAGENTS_RAY_STATE_DIR)"
    fi
    for file in "${FILES[@]}"; do
        name=$(state_get "$file" name || echo "?")
        if sid=$(node_running "$file"); then status="running (session $sid)"; else status="not running"; fi
        echo "$name  $(state_get "$file" role || echo "?")  $(state_get "$file" temp_dir || echo "?")  $status"
    done
    exit 0
fi
((${#FILES[@]} > 0)) || { echo "nothing to stop: no node recorded in $COAGENTS_RAY_STATE_DIR"; exit 0; }

OWN_SID=$(ps -o sid= -p $$ | tr -d ' ')
FAILED=0
for file in "${FILES[@]}"; do
    name=$(state_get "$file" name) || { note "$file is not a state file; skipped"; FAILED=1; continue; }
    sid=$(state_get "$file" sid) || sid=""
    temp_dir=$(state_get "$file" temp_dir) || temp_dir=""
    if ! [[ "$sid" =~ ^[0-9]+$ ]] || [[ -z "$temp_dir" ]]; then
        note "$file is incomplete; removed without stopping anything"
        rm -f "$file"
        continue
    fi
    if [[ "$sid" == "$OWN_SID" ]]; then
        note "node '$name': its session $sid is this shell's own session; refusing to stop it"
        FAILED=1
        continue
    fi
    raylet=$(find_raylet "$temp_dir" "$sid")
    if [[ -z "$raylet" ]]; then
        # The node is gone (or the session id now belongs to something else): touch nothing.
        echo "node '$name' is not running (no raylet for $temp_dir in session $sid); record removed"
        rm -f "$file"
        ((CLEAN)) && rm -rf "$temp_dir"
        continue
    fi

    # Everything this node started, grouped like `ray stop`: raylet, then the rest, GCS last.
    mapfile -t tree < <(session_tree "$sid")
    gcs=$(process_table | awk -v sid="$sid" '$3 == sid && $4 ~ /\/gcs\/gcs_server$/ { print $1 }')
    rest=()
    for pid in "${tree[@]}"; do
        [[ "$pid" == "$raylet" || " $gcs " == *" $pid "* ]] || rest+=("$pid")
    done
    step=$(( (GRACE + 2) / 3 ))
    terminate "$step" "$raylet" || true
    terminate "$step" "${rest[@]}" || true
    # shellcheck disable=SC2086  # one PID per word
    terminate "$step" $gcs || true

    # Whatever is still in the session or was a descendant of it gets SIGKILL.
    # shellcheck disable=SC2046
    left=$(alive "${tree[@]}" $(session_tree "$sid"))
    if [[ -n "$left" ]]; then
        # shellcheck disable=SC2086
        terminate 0 $left || true
        # shellcheck disable=SC2086
        left=$(alive $left)
    fi
    if [[ -n "$left" ]]; then
        # shellcheck disable=SC2086
        note "node '$name': processes still alive after SIGKILL:" $left
        FAILED=1
        continue
    fi
    rm -f "$file"
    echo "stopped node '$name' (${#tree[@]} processes of session $sid; logs in $temp_dir/session_latest/logs)"
    if ((CLEAN)); then
        rm -rf "$temp_dir"
    fi
done
exit "$FAILED"
