#!/usr/bin/env bash
# Main command: set up, then JupyterLab with the llmgw server extension (REST API, MCP endpoint,
# lab panel) and the quickstart notebook, on 127.0.0.1. Extra arguments go to `jupyter lab`.
# Without Codex credentials, Codex jobs use the bundled local echo model (said on screen).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

PY=.venv/bin/python
export LLMGW_CODEX_PATH="$PWD/.codex-cli/node_modules/.bin/codex"
export PATH="$PWD/.venv/bin:$PATH"

# First free port from 8888 (or $LLMGW_LAB_PORT): the URLs printed below must be the real ones.
PORT=$("$PY" - "${LLMGW_LAB_PORT:-8888}" <<'EOF'
import socket, sys
start = int(sys.argv[1])
for port in range(start, start + 100):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    sys.exit(f"no free port in {start}-{start + 99}")
EOF
)
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(24))')
args=(--ServerApp.ip=127.0.0.1 --ServerApp.port="$PORT" --ServerApp.port_retries=0
      --IdentityProvider.token="$TOKEN")
[ "$(id -u)" = 0 ] && args+=(--allow-root)  # containers often run as root

MOCK_PID=""
cleanup() {
  if [ -n "$MOCK_PID" ]; then
    kill "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! "$PY" -c 'import sys
from llmgw_jupyter.providers.codex import codex_has_credentials
sys.exit(0 if codex_has_credentials() else 1)'; then
  mkdir -p .llmgw-demo && echo '*' >.llmgw-demo/.gitignore  # local state, never committed
  log=.llmgw-demo/mock-model.log
  llmgw mock-model --codex-home .llmgw-demo/codex-home >"$log" 2>&1 &
  MOCK_PID=$!
  for _ in $(seq 200); do
    grep -q '^CODEX_HOME=' "$log" && break
    kill -0 "$MOCK_PID" 2>/dev/null || { cat "$log" >&2; echo "lab.sh: the echo model did not start" >&2; exit 1; }
    sleep 0.05
  done
  DEMO_HOME=$(sed -n 's/^CODEX_HOME=//p' "$log" | head -n 1)
  [ -n "$DEMO_HOME" ] || { cat "$log" >&2; echo "lab.sh: the echo model did not start" >&2; exit 1; }
  args+=(--LLMGatewayApp.codex_home="$DEMO_HOME")
  echo
  echo "lab.sh: no Codex credentials found (OPENAI_API_KEY, CODEX_API_KEY or ~/.codex/auth.json):"
  echo "        Codex jobs use the LOCAL ECHO MODEL, whose answers repeat the prompt."
  echo "        Log in with 'codex login' or set OPENAI_API_KEY to use a real model."
fi

# The owner's policy: $LLMGW_POLICY if set, else the example that refuses danger-full-access (the
# quickstart notebook shows that refusal). Edit the file while Lab runs: it is hot-reloaded.
export LLMGW_POLICY="${LLMGW_POLICY:-$PWD/notebooks/owner-policy.example.json}"
echo "lab.sh: owner policy $LLMGW_POLICY"

NOTEBOOK=()
[ -f notebooks/quickstart.ipynb ] && NOTEBOOK=(notebooks/quickstart.ipynb)
BASE="http://127.0.0.1:$PORT"
cat <<EOF

llmgw: JupyterLab      $BASE/lab?token=$TOKEN
llmgw: MCP endpoint    $BASE/llmgw/mcp
       connect an external agent with its own grant (policy: see README, "Connect an external agent"):
         echo '{"version": "1", "default": "allow"}' > agent-policy.json
         export GW_TOKEN=\$(.venv/bin/llmgw grant create my-agent --policy agent-policy.json | tail -n 1)
         codex mcp add llmgw --url $BASE/llmgw/mcp --bearer-token-env-var GW_TOKEN
       (the Jupyter token above also works as the owner's bearer token)

EOF
jupyter lab "${NOTEBOOK[@]}" "${args[@]}" "$@"
