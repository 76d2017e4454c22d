#!/usr/bin/env bash
# Create .venv with uv from the committed lock. Needs python3 (3.11+) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    if [ -x "$HOME/.local/bin/uv" ]; then
        export PATH="$HOME/.local/bin:$PATH"
    else
        echo "bootstrap: installing uv from PyPI" >&2
        python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
        export PATH="$HOME/.local/bin:$PATH"
    fi
fi
command -v uv >/dev/null || { echo "bootstrap: error: uv is not on PATH after installing it" >&2; exit 1; }

echo "bootstrap: syncing .venv from uv.lock" >&2
uv sync --frozen --extra dev --python "$(command -v python3)" --quiet
