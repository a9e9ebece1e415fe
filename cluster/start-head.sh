#!/usr/bin/env bash
# Start the head node of a Ray cluster for coagents: token authentication on, dashboard on
# 127.0.0.1 unless you opt in, no usage stats, its own temp dir, and a record of what it started
# so that stop.sh stops this node and nothing else. See cluster/README.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") [options] [-- extra 'ray start' options]

Start a Ray head node (Ray 2.60, token authentication) in a session of its own and record it,
so that stop.sh stops exactly this node. Every option also reads an environment variable.

Options:
  --port N             GCS port workers and drivers connect to   [COAGENTS_RAY_PORT, 6379]
  --num-cpus N         CPUs this node offers (default: all; 0 keeps layer actors off the head)
                                                                 [COAGENTS_RAY_NUM_CPUS]
  --resources JSON     custom resources, e.g. '{"head": 1}'      [COAGENTS_RAY_RESOURCES]
  --node-ip ADDR       the address other nodes reach this one at (default: Ray's guess)
                                                                 [COAGENTS_RAY_NODE_IP]
  --name NAME          name of this node for stop.sh             [COAGENTS_RAY_NAME, head-PORT]
  --temp-dir DIR       Ray's temp dir for this node (logs, sockets; at most $MAX_TEMP_DIR_LENGTH characters)
                       [COAGENTS_RAY_TEMP_DIR, \$COAGENTS_RAY_STATE_DIR/NAME]
  --dashboard MODE     auto (Ray decides: the full dashboard and the Jobs API if ray[default]
                       is installed), on, off (no dashboard and no Jobs API: 'ray job submit'
                       cannot reach the cluster)                 [COAGENTS_RAY_DASHBOARD, auto]
  --dashboard-port N   dashboard and Jobs API port               [COAGENTS_RAY_DASHBOARD_PORT, 8265]
  --dashboard-host H   bind address of the dashboard; 127.0.0.1 unless you opt in with
                       0.0.0.0 (anyone who reaches the port and has the token can run code)
                                                                 [COAGENTS_RAY_DASHBOARD_HOST, 127.0.0.1]
  --client-port N      Ray Client server port (only started when ray[client] or ray[default] is
                       installed; Ray's default is 10001)       [COAGENTS_RAY_CLIENT_PORT]
  -h, --help           show this help

Environment: RAY_AUTH_MODE=token is always exported. The token comes from RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; if none exists, this script creates
~/.ray/auth_token (mode 600 from the start) with 'ray get-auth-token --generate'.
State files and default temp dirs live in COAGENTS_RAY_STATE_DIR
(now $COAGENTS_RAY_STATE_DIR). The 'ray' on PATH is used: put the environment that has
Ray 2.60 and this project installed first on PATH.

Example:
  cluster/start-head.sh --port 6379 --num-cpus 2
  cluster/start-head.sh --num-cpus 0 -- --object-store-memory=2000000000
EOF
}

PORT="${COAGENTS_RAY_PORT:-6379}"
NUM_CPUS="${COAGENTS_RAY_NUM_CPUS:-}"
RESOURCES="${COAGENTS_RAY_RESOURCES:-}"
NODE_IP_ARG="${COAGENTS_RAY_NODE_IP:-}"
NAME="${COAGENTS_RAY_NAME:-}"
TEMP_DIR="${COAGENTS_RAY_TEMP_DIR:-}"
DASHBOARD="${COAGENTS_RAY_DASHBOARD:-auto}"
DASHBOARD_PORT="${COAGENTS_RAY_DASHBOARD_PORT:-8265}"
DASHBOARD_HOST="${COAGENTS_RAY_DASHBOARD_HOST:-127.0.0.1}"
CLIENT_PORT="${COAGENTS_RAY_CLIENT_PORT:-}"
EXTRA=()

while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --port) need_value "$@"; PORT="$2"; shift 2 ;;
        --num-cpus) need_value "$@"; NUM_CPUS="$2"; shift 2 ;;
        --resources) need_value "$@"; RESOURCES="$2"; shift 2 ;;
        --node-ip) need_value "$@"; NODE_IP_ARG="$2"; shift 2 ;;
        --name) need_value "$@"; NAME="$2"; shift 2 ;;
        --temp-dir) need_value "$@"; TEMP_DIR="$2"; shift 2 ;;
        --dashboard) need_value "$@"; DASHBOARD="$2"; shift 2 ;;
        --dashboard-port) need_value "$@"; DASHBOARD_PORT="$2"; shift 2 ;;
        --dashboard-host) need_value "$@"; DASHBOARD_HOST="$2"; shift 2 ;;
        --client-port) need_value "$@"; CLIENT_PORT="$2"; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

require_int --port "$PORT"
require_int --dashboard-port "$DASHBOARD_PORT"
[[ -z "$NUM_CPUS" ]] || require_int --num-cpus "$NUM_CPUS"
[[ -z "$CLIENT_PORT" ]] || require_int --client-port "$CLIENT_PORT"
NAME="${NAME:-head-$PORT}"
require_name --name "$NAME"
TEMP_DIR="${TEMP_DIR:-$COAGENTS_RAY_STATE_DIR/$NAME}"
check_temp_dir "$TEMP_DIR"
case "$DASHBOARD" in
    auto) DASHBOARD_ARGS=() ;;
    on) DASHBOARD_ARGS=(--include-dashboard=true) ;;
    off) DASHBOARD_ARGS=(--include-dashboard=false) ;;
    *) die "--dashboard must be auto, on or off, got '$DASHBOARD'" ;;
esac
require_commands ray setsid ps awk

export RAY_AUTH_MODE=token
export RAY_USAGE_STATS_ENABLED=0
claim_name "$NAME"
if ! token_source >/dev/null; then  # `ray start` does not create one: it fails without a token
    # umask: the file is private from the moment it exists; >/dev/null: the token is not printed
    (umask 077 && ray get-auth-token --generate >/dev/null) \
        || die "could not create a token with 'ray get-auth-token --generate'"
    chmod 600 "$HOME/.ray/auth_token"
    note "no Ray authentication token was set: created ~/.ray/auth_token (copy it to every node)"
fi

ARGS=(--head "--port=$PORT" "--temp-dir=$TEMP_DIR" --disable-usage-stats
      "--dashboard-host=$DASHBOARD_HOST" "--dashboard-port=$DASHBOARD_PORT" "${DASHBOARD_ARGS[@]}")
[[ -z "$NUM_CPUS" ]] || ARGS+=("--num-cpus=$NUM_CPUS")
[[ -z "$RESOURCES" ]] || ARGS+=("--resources=$RESOURCES")
[[ -z "$NODE_IP_ARG" ]] || ARGS+=("--node-ip-address=$NODE_IP_ARG")
[[ -z "$CLIENT_PORT" ]] || ARGS+=("--ray-client-server-port=$CLIENT_PORT")

start_node "$NAME" head "$TEMP_DIR" "${ARGS[@]}" "${EXTRA[@]}"
ADDRESS="$NODE_IP:$PORT"
if [[ "$DASHBOARD" == off ]]; then
    DASHBOARD_URL=off
    # Ray 2.60 with --include-dashboard=false runs its API server without the Jobs module.
    DASHBOARD_LINE="off (so no Jobs API either: 'ray job submit' cannot reach this cluster)"
else
    DASHBOARD_URL="http://$DASHBOARD_HOST:$DASHBOARD_PORT"
    DASHBOARD_LINE="$DASHBOARD_URL (Jobs API only with ray[default])"
fi
{
    echo "address=$ADDRESS"
    echo "dashboard=$DASHBOARD_URL"
} >>"$(state_file "$NAME")"

TOKEN_FROM=$(token_source)
cat <<EOF

coagents: head node '$NAME' started (session $NODE_SID, temp dir $TEMP_DIR)
  cluster address:  $ADDRESS
  dashboard / Jobs: $DASHBOARD_LINE
  token:            from $TOKEN_FROM
Join a worker (the same token must reach it: the same ~/.ray/auth_token, or RAY_AUTH_TOKEN):
  $(dirname "$0")/start-worker.sh --address $ADDRESS
Train on the cluster from a node:
  RAY_AUTH_MODE=token coagents train CONFIG --backend ray --address $ADDRESS --out SHARED_DIR
Stop this node only (not with 'ray stop', which stops every Ray instance of this user here):
  $(stop_command "$NAME")
EOF
