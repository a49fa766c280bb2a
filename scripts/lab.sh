#!/usr/bin/env bash
# Main command: set up, then JupyterLab with the llmgw server extension (REST API, MCP endpoint,
# lab panel) on the quickstart notebook, on 127.0.0.1. Extra arguments go to `jupyter lab` and
# win over the script's own settings (port, token, root dir, codex_home, ...).
# Without Codex credentials, Codex jobs use the bundled local echo model; without
# ANTHROPIC_API_KEY, so do Claude Code jobs (each said on screen).
# Local state (the Jupyter token, the echo models' logs and Codex home) lives in .llmgw-demo/
# (git-ignored).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)  # absolute: jobs and kernels run elsewhere
cd "$ROOT"
bash scripts/bootstrap.sh

PY="$ROOT/.venv/bin/python"
export LLMGW_CODEX_PATH="$ROOT/.codex-cli/node_modules/.bin/codex"
export LLMGW_CLAUDE_PATH="$ROOT/.claude-cli/node_modules/.bin/claude"
export PATH="$ROOT/.venv/bin:$PATH"
STATE="$ROOT/.llmgw-demo"
NOTEBOOKS="$ROOT/notebooks"
# Lab serves a working copy of the notebooks (git-ignored): running them saves outputs there, and
# the committed notebooks/ stay clean. A notebook already in the copy is never overwritten.
WORKBOOKS="$STATE/notebooks"
CALLER_ARGS=("$@")

# The value the caller gave an option under any of its names (`--name=value` or `--name value`);
# status 1 if none. The script sets an option only when the caller did not: no "only accepts one
# value, got 2".
caller_value() {
  local i arg name
  for ((i = 0; i < ${#CALLER_ARGS[@]}; i++)); do
    arg=${CALLER_ARGS[i]}
    for name in "$@"; do
      case $arg in
        "$name") printf '%s\n' "${CALLER_ARGS[i + 1]-}"; return 0 ;;
        "$name="*) printf '%s\n' "${arg#*=}"; return 0 ;;
      esac
    done
  done
  return 1
}

args=()
TOKEN_NOTE=""
if ! IP=$(caller_value --ServerApp.ip --ip); then
  IP=127.0.0.1
  args+=(--ServerApp.ip="$IP")
fi
case $IP in
  "" | 0.0.0.0 | "*" | localhost) HOST=127.0.0.1 ;;
  *:*) HOST="[$IP]" ;;
  *) HOST=$IP ;;
esac

# The first port from $1 (100 tried) that binds on loopback. SO_REUSEADDR as the server's own
# bind: a port that a server stopped a moment ago left in TIME_WAIT counts as free.
first_free_port() {
  "$PY" - "$1" <<'EOF'
import socket, sys
start = int(sys.argv[1])
for port in range(start, start + 100):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    sys.exit(f"no free port in {start}-{start + 99}")
EOF
}

# First free port from 8888 (or $LLMGW_LAB_PORT): the same one on every run while it is free, and
# the URLs printed below are the real ones.
if ! PORT=$(caller_value --ServerApp.port --port); then
  PORT=$(first_free_port "${LLMGW_LAB_PORT:-8888}")
  args+=(--ServerApp.port="$PORT")
fi
# The direct MCP listener (loopback only, outside Jupyter's HTTP stack: the same endpoint, tokens
# and policy at about a third of the server CPU per call; README, "Direct MCP listener"), on the
# first free port from 9888 (or $LLMGW_MCP_DIRECT_PORT) that is not the server's own.
if ! DIRECT_PORT=$(caller_value --LLMGatewayApp.mcp_direct_port); then
  DIRECT_PORT=$(first_free_port "${LLMGW_MCP_DIRECT_PORT:-9888}")
  if [ "$DIRECT_PORT" = "$PORT" ]; then DIRECT_PORT=$(first_free_port $((PORT + 1))); fi
  args+=(--LLMGatewayApp.mcp_direct_port="$DIRECT_PORT")
fi
DIRECT_HOST=$(caller_value --LLMGatewayApp.mcp_direct_host) || DIRECT_HOST=127.0.0.1
case $DIRECT_HOST in *:*) DIRECT_HOST="[$DIRECT_HOST]" ;; esac
case $DIRECT_PORT in
  0) DIRECT_URL="on a free port: the server log says which" ;;
  "" | *[!0-9]*) DIRECT_URL="off" ;;
  *) DIRECT_URL="http://$DIRECT_HOST:$DIRECT_PORT/mcp" ;;
esac
caller_value --ServerApp.port_retries --port-retries >/dev/null || args+=(--ServerApp.port_retries=0)

# The token is kept (mode 0600) so that a restart keeps open tabs working.
if ! TOKEN=$(caller_value --IdentityProvider.token --ServerApp.token); then
  TOKEN_FILE="$STATE/lab-token"
  (
    umask 077
    mkdir -p "$STATE" && chmod 700 "$STATE"
    if ! grep -qE '^[0-9a-f]{48}$' "$TOKEN_FILE" 2>/dev/null; then
      "$PY" -c 'import secrets; print(secrets.token_hex(24))' >"$TOKEN_FILE"
    fi
    chmod 600 "$TOKEN_FILE"
  )
  TOKEN=$(head -n 1 "$TOKEN_FILE")
  args+=(--IdentityProvider.token="$TOKEN")
  # The kept token is the owner's: hidden from every job, even one working in the repository.
  args+=(--LLMGatewayApp.protected_paths="$TOKEN_FILE")
  TOKEN_NOTE=$'\n       (kept in .llmgw-demo/lab-token: the URL stays the same after a restart)'
fi

if BASE_PATH=$(caller_value --ServerApp.base_url); then
  BASE_PATH="/${BASE_PATH#/}" && BASE_PATH="${BASE_PATH%/}/"
else
  BASE_PATH=/
fi
# Lab serves the working copy and opens the quickstart, unless the caller chose another root.
LAB_PATH="lab"
if ! caller_value --ServerApp.root_dir --notebook-dir --ServerApp.notebook_dir >/dev/null; then
  (umask 077 && mkdir -p "$WORKBOOKS")
  for notebook in "$NOTEBOOKS"/*.ipynb; do
    [ -e "$WORKBOOKS/$(basename "$notebook")" ] || cp "$notebook" "$WORKBOOKS/"
  done
  args+=(--ServerApp.root_dir="$WORKBOOKS")
  if [ -f "$WORKBOOKS/quickstart.ipynb" ] && ! caller_value --ServerApp.file_to_run >/dev/null
  then
    args+=("$WORKBOOKS/quickstart.ipynb")
    LAB_PATH="lab/tree/quickstart.ipynb"
  fi
  echo "lab.sh: notebooks served from .llmgw-demo/notebooks (your working copy, git-ignored;"
  echo "        delete a file there to get the committed version back)"
fi
if [ "$(id -u)" = 0 ] && ! caller_value --allow-root --ServerApp.allow_root >/dev/null; then
  args+=(--allow-root)  # containers often run as root
fi

MOCK_PID=""
CLAUDE_MOCK_PID=""
cleanup() {
  local pid
  for pid in "$MOCK_PID" "$CLAUDE_MOCK_PID"; do
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The first line of LOG matching the extended regex PATTERN, once the background process PID
# (a local echo model) has printed it: up to 30 s on a busy machine. If PID ends first or the
# time is up, its log and why go to stderr and the status is 1.
started_line() {
  local pid=$1 log=$2 pattern=$3 what=$4 line
  for _ in $(seq 600); do
    line=$(grep -m 1 -E "$pattern" "$log" || true)
    [ -n "$line" ] && { printf '%s\n' "$line"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  cat "$log" >&2
  echo "lab.sh: $what did not start" >&2
  return 1
}

if ! caller_value --LLMGatewayApp.codex_home >/dev/null && ! "$PY" -c 'import sys
from llmgw_jupyter.providers.codex import codex_has_credentials
sys.exit(0 if codex_has_credentials() else 1)'; then
  echo "lab.sh: starting the local echo model..."
  mkdir -p "$STATE"
  log="$STATE/mock-model.log"
  : >"$log"
  llmgw mock-model --codex-home "$STATE/codex-home" >"$log" 2>&1 &
  MOCK_PID=$!
  DEMO_HOME=$(started_line "$MOCK_PID" "$log" '^CODEX_HOME=' "the echo model") || exit 1
  DEMO_HOME=${DEMO_HOME#CODEX_HOME=}
  args+=(--LLMGatewayApp.codex_home="$DEMO_HOME")
  echo
  echo "lab.sh: no Codex credentials found (OPENAI_API_KEY, CODEX_API_KEY or ~/.codex/auth.json):"
  echo "        Codex jobs use the LOCAL ECHO MODEL, whose answers repeat the prompt."
  echo "        Log in with 'codex login' or set OPENAI_API_KEY to use a real model."
fi

# Claude Code jobs get the owner's key from the server's ANTHROPIC_API_KEY only (each caller has a
# private CLAUDE_CONFIG_DIR, so a `claude` login of the user's own is not used). Without a key, and
# unless the caller configures the providers, they use the bundled mock Anthropic API.
if ! caller_value --LLMGatewayApp.providers >/dev/null && [ -z "${ANTHROPIC_API_KEY:-}" ]; then
  echo "lab.sh: starting the local echo model for Claude Code..."
  mkdir -p "$STATE"
  log="$STATE/mock-anthropic.log"
  : >"$log"
  "$PY" -m llmgw_jupyter.testing.mock_anthropic >"$log" 2>&1 &
  CLAUDE_MOCK_PID=$!
  CLAUDE_MOCK_URL=$(started_line "$CLAUDE_MOCK_PID" "$log" '^http://127\.0\.0\.1:[0-9]+$' \
    "the Claude echo model") || exit 1
  args+=(--LLMGatewayApp.providers="{\"claude\": {\"options\": {\"base_url\": \"$CLAUDE_MOCK_URL\"}}}")
  export ANTHROPIC_API_KEY=sk-ant-local-echo-model-dummy  # the mock checks no key; the CLI needs one
  echo
  echo "lab.sh: no ANTHROPIC_API_KEY found:"
  echo "        Claude Code jobs use the LOCAL ECHO MODEL, whose answers repeat the prompt."
  echo "        Set ANTHROPIC_API_KEY to use a real model (a 'claude' login is not used by the gateway)."
fi

# The owner's policy: $LLMGW_POLICY if set, else the example that refuses danger-full-access (the
# quickstart notebook shows that refusal). Edit the file while Lab runs: it is hot-reloaded.
export LLMGW_POLICY="${LLMGW_POLICY:-$NOTEBOOKS/owner-policy.example.json}"
echo "lab.sh: owner policy $LLMGW_POLICY"

BASE="http://$HOST:$PORT${BASE_PATH%/}"
cat <<EOF

llmgw: JupyterLab      $BASE/$LAB_PATH?token=$TOKEN
llmgw: MCP endpoint    $BASE/llmgw/mcp
llmgw: MCP direct      $DIRECT_URL
       (the same endpoint for agents on this machine, outside Jupyter's HTTP stack: faster)
       connect an external agent with its own grant (policy: see README, "Connect an external agent"):
         echo '{"version": "1", "default": "allow"}' > agent-policy.json
         export GW_TOKEN=\$(.venv/bin/llmgw grant create my-agent --policy agent-policy.json | tail -n 1)
         codex mcp add llmgw --url $BASE/llmgw/mcp --bearer-token-env-var GW_TOKEN
       (the Jupyter token above also works as the owner's bearer token)$TOKEN_NOTE

EOF
jupyter lab "${args[@]}" "$@"
