#!/usr/bin/env bash
# Set up a fresh machine for llmgw-jupyter: a virtualenv with the package and its test extras,
# and the pinned Codex and Claude Code CLIs in project-local npm prefixes (never global).
# Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

CODEX_VERSION="0.169.0"
CLAUDE_VERSION="2.1.328"
PYTHON="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root for: $*" >&2; return 1; fi; }

say() { echo "bootstrap: $*"; }

if [ ! -x .venv/bin/python ]; then
  say "creating the virtualenv .venv..."
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    echo "python venv module missing: installing python3-venv" >&2
    as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv
    rm -rf .venv && "$PYTHON" -m venv .venv
  fi
fi
# The editable install builds the JupyterLab extension when labextension/src is newer than the
# build (hatch-jupyter-builder): say so, it is the slow step.
BUILT=llmgw_jupyter/labextension/package.json
if [ ! -f "$BUILT" ] || [ -n "$(find labextension/src -newer "$BUILT" -print -quit 2>/dev/null)" ]; then
  say "installing Python packages into .venv and building the JupyterLab extension" \
    "(first run, a few minutes)..."
else
  say "checking the Python packages in .venv..."
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# Bubblewrap: the isolation boundary every grant's job runs in (SECURITY.md). Without it grants'
# jobs are refused; the server says so at start.
# socat: Claude Code's own command sandbox (which keeps the API key from a job's commands) needs
# it; without it every shell command of a Claude job is refused.
if ! command -v socat >/dev/null; then
  say "installing Debian's socat (Claude Code's command sandbox)..."
  as_root apt-get update -qq && as_root apt-get install -y -qq socat ||
    echo "bootstrap: could not install socat: Claude jobs cannot run shell commands" >&2
fi
if ! command -v bwrap >/dev/null; then
  say "installing Debian's bubblewrap (the jobs' isolation boundary)..."
  as_root apt-get update -qq && as_root apt-get install -y -qq bubblewrap ||
    echo "bootstrap: could not install bubblewrap: grants' jobs will be refused" >&2
fi

if ! .codex-cli/node_modules/.bin/codex --version 2>/dev/null | grep -q "$CODEX_VERSION"; then
  say "installing the Codex CLI $CODEX_VERSION into .codex-cli (npm)..."
  npm install --prefix .codex-cli --no-audit --no-fund --loglevel=error "@openai/codex@${CODEX_VERSION}"
fi
# Claude Code: the native binary comes as the platform package (an optional dependency); the
# package's postinstall (install.cjs, no network) links it over the bin stub. npm warns that it
# wants Node >= 22; it installs and runs on Node 20.
if ! .claude-cli/node_modules/.bin/claude --version 2>/dev/null | grep -q "$CLAUDE_VERSION"; then
  say "installing the Claude Code CLI $CLAUDE_VERSION into .claude-cli (npm, ~400 MB)..."
  npm install --prefix .claude-cli --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@${CLAUDE_VERSION}"
fi
echo "bootstrap: $(.venv/bin/python --version), $(.codex-cli/node_modules/.bin/codex --version)," \
  "claude $(.claude-cli/node_modules/.bin/claude --version)"
