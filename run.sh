#!/usr/bin/env bash
# mvelab's two entry points on a fresh machine (Python 3.11 + pip only):
#   ./run.sh main [ARGS...]   set up .venv, then run the main job (the small default experiment)
#   ./run.sh test [ARGS...]   set up .venv, then run the test suite (extra ARGS go to pytest)
# Both create or refresh the project's virtual environment in .venv first: it is (re)installed
# whenever pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

setup() {
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
  fi
  local stamp=.venv/.mvelab-installed want
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import mvelab" 2>/dev/null; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[test]"
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  main)
    setup
    exec .venv/bin/mvelab reproduce figure1 "$@"
    ;;
  test)
    setup
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh main|test [ARGS...]" >&2
    exit 2
    ;;
esac
