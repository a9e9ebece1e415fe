#!/usr/bin/env bash
# Join this machine to a coagents Ray cluster as a worker node: token authentication on (a
# joining node needs RAY_AUTH_MODE=token and the head's token), no usage stats, its own temp dir,
# and a record of what it started so that stop.sh stops this node and nothing else.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") --address HEAD:PORT [options] [-- extra 'ray start' options]

Start a Ray worker node (Ray 2.60, token authentication) that joins the head at HEAD:PORT, in a
session of its own, and record it so that stop.sh stops exactly this node. Every option also
reads an environment variable.

Options:
  --address HEAD:PORT  the head's GCS address, as start-head.sh printed it
                                                                 [COAGENTS_RAY_ADDRESS]
  --num-cpus N         CPUs this node offers (default: all)      [COAGENTS_RAY_NUM_CPUS]
  --resources JSON     custom resources, e.g. '{"layers": 1}'    [COAGENTS_RAY_RESOURCES]
  --node-ip ADDR       the address other nodes reach this one at (default: Ray's guess)
                                                                 [COAGENTS_RAY_NODE_IP]
  --name NAME          name of this node for stop.sh             [COAGENTS_RAY_NAME, worker]
  --temp-dir DIR       Ray's temp dir for this node (logs, sockets; at most $MAX_TEMP_DIR_LENGTH characters)
                       [COAGENTS_RAY_TEMP_DIR, \$COAGENTS_RAY_STATE_DIR/NAME]
  -h, --help           show this help

The token: the head's token must reach this machine before it joins, as RAY_AUTH_TOKEN (e.g.
export RAY_AUTH_TOKEN="\$(ssh HEAD cat .ray/auth_token)"), as a file named by
RAY_AUTH_TOKEN_PATH, or copied to ~/.ray/auth_token (mode 600). On the head's own host the
head's ~/.ray/auth_token is found as it is. Without a token this script stops at once (Ray
itself would fail with InvalidAuthToken after about 20 s).

Example:
  RAY_AUTH_TOKEN=... cluster/start-worker.sh --address 10.0.0.10:6379 --num-cpus 4
  cluster/start-worker.sh --address 127.0.0.1:6379 --name worker2 --num-cpus 1
EOF
}

ADDRESS="${COAGENTS_RAY_ADDRESS:-}"
NUM_CPUS="${COAGENTS_RAY_NUM_CPUS:-}"
RESOURCES="${COAGENTS_RAY_RESOURCES:-}"
NODE_IP_ARG="${COAGENTS_RAY_NODE_IP:-}"
NAME="${COAGENTS_RAY_NAME:-worker}"
TEMP_DIR="${COAGENTS_RAY_TEMP_DIR:-}"
EXTRA=()

while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --address) need_value "$@"; ADDRESS="$2"; shift 2 ;;
        --num-cpus) need_value "$@"; NUM_CPUS="$2"; shift 2 ;;
        --resources) need_value "$@"; RESOURCES="$2"; shift 2 ;;
        --node-ip) need_value "$@"; NODE_IP_ARG="$2"; shift 2 ;;
        --name) need_value "$@"; NAME="$2"; shift 2 ;;
        --temp-dir) need_value "$@"; TEMP_DIR="$2"; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[[ -n "$ADDRESS" ]] || die "--address HEAD:PORT is required (see --help)"
[[ "$ADDRESS" =~ ^[^:/[:space:]]+:[0-9]+$ ]] || die "--address must be HOST:PORT, got '$ADDRESS'"
[[ -z "$NUM_CPUS" ]] || require_int --num-cpus "$NUM_CPUS"
require_name --name "$NAME"
TEMP_DIR="${TEMP_DIR:-$COAGENTS_RAY_STATE_DIR/$NAME}"
check_temp_dir "$TEMP_DIR"
require_commands ray setsid ps awk timeout

export RAY_AUTH_MODE=token
export RAY_USAGE_STATS_ENABLED=0
token_source >/dev/null || die "no Ray authentication token on this machine: set RAY_AUTH_TOKEN" \
    "to the head's token (on the head: cat ~/.ray/auth_token), or copy it to ~/.ray/auth_token"
claim_name "$NAME"
# Fail fast when the head cannot be reached (ray start would retry for minutes).
HEAD_HOST="${ADDRESS%:*}"
HEAD_PORT="${ADDRESS##*:}"
# shellcheck disable=SC2016  # $1 and $2 expand in the inner shell
if ! timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$HEAD_HOST" "$HEAD_PORT" 2>/dev/null; then
    die "cannot reach the head's GCS at $ADDRESS (is start-head.sh running there, and the port open?)"
fi

ARGS=("--address=$ADDRESS" "--temp-dir=$TEMP_DIR" --disable-usage-stats)
[[ -z "$NUM_CPUS" ]] || ARGS+=("--num-cpus=$NUM_CPUS")
[[ -z "$RESOURCES" ]] || ARGS+=("--resources=$RESOURCES")
[[ -z "$NODE_IP_ARG" ]] || ARGS+=("--node-ip-address=$NODE_IP_ARG")

start_node "$NAME" worker "$TEMP_DIR" "${ARGS[@]}" "${EXTRA[@]}"
echo "head=$ADDRESS" >>"$(state_file "$NAME")"

cat <<EOF

coagents: worker node '$NAME' ($NODE_IP) joined $ADDRESS (session $NODE_SID, temp dir $TEMP_DIR)
Check the cluster:      RAY_AUTH_MODE=token ray status --address $ADDRESS
Stop this node only:    $(stop_command "$NAME")
                        (not with 'ray stop', which stops every Ray instance of this user here)
EOF
