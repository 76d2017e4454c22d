#!/usr/bin/env bash
# `make test`: lint and types, then the suite against a real Kafka 4 broker and PostgreSQL.
# Starts what is missing and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

for tool in java mvn; do
    command -v "$tool" >/dev/null || { echo "test: error: $tool is not installed (needed for the local Kafka broker)" >&2; exit 1; }
done

# ORDERPROC_TEST_LOAD=N: N busy processes hold the CPU for the whole run, so a test that
# passes only on an idle machine fails here instead of on CI some day.
load="${ORDERPROC_TEST_LOAD:-0}"
if ! [[ "$load" =~ ^[0-9]+$ ]] || [ "$load" -gt 64 ]; then
    echo "test: error: ORDERPROC_TEST_LOAD must be a number of busy processes from 0 to 64, got '$load'" >&2
    exit 2
fi

# ORDERPROC_TEST_LANES: 2 (default) or 1 pytest processes for a whole run (see the end).
lanes="${ORDERPROC_TEST_LANES:-2}"
if ! [[ "$lanes" =~ ^[12]$ ]]; then
    echo "test: error: ORDERPROC_TEST_LANES must be 1 or 2, got '$lanes'" >&2
    exit 2
fi

scripts/ensure-packages.sh

if [ "${SKIP_LINT:-0}" != 1 ]; then  # `make test-faults` runs the fault scenarios only
    echo "== lint" >&2
    $BIN/ruff check .
    $BIN/ruff format --check .
    $BIN/mypy
fi

started_kafka=0
started_postgres=0
load_pids=()
second_pid=""
cleanup() {
    if [ -n "$second_pid" ] && kill -0 "$second_pid" 2>/dev/null; then  # interrupted
        pkill -TERM -P "$second_pid" 2>/dev/null || true
        wait "$second_pid" 2>/dev/null || true
    fi
    if [ ${#load_pids[@]} -gt 0 ]; then kill "${load_pids[@]}" 2>/dev/null || true; fi
    if [ "$started_kafka" = 1 ]; then $BIN/orderproc dev down || true; fi
    if [ "$started_postgres" = 1 ]; then $BIN/python -m devstack.postgres down || true; fi
}
trap cleanup EXIT

# Captured first: `dev status | grep -q` under pipefail fails when grep stops reading early.
status="$($BIN/orderproc dev status)"
if [ -z "${ORDERPROC_TEST_BOOTSTRAP:-}" ]; then
    if ! grep -q "^kafka .* running" <<<"$status"; then started_kafka=1; fi
    $BIN/orderproc dev up
    export ORDERPROC_TEST_BOOTSTRAP=127.0.0.1:${ORDERPROC_KAFKA_PORT:-9092}
fi
if [ -z "${ORDERPROC_TEST_DATABASE_URL:-}" ]; then
    if ! grep -q "^postgres .* running" <<<"$status"; then started_postgres=1; fi
    ORDERPROC_TEST_DATABASE_URL="$($BIN/python -m devstack.postgres up)"
    export ORDERPROC_TEST_DATABASE_URL
fi

for _ in $(seq 1 "$load"); do
    python3 -c 'while True: pass' &
    load_pids+=($!)
done
if [ "$load" -gt 0 ]; then echo "== load: $load busy processes (pids ${load_pids[*]})" >&2; fi

echo "== tests (broker $ORDERPROC_TEST_BOOTSTRAP)" >&2
# Output written by C libraries (librdkafka's assertions, glibc's heap checks) goes
# straight to stderr (--capture=sys: pytest captures Python's streams only), and stderr is
# kept: if the interpreter dies, what the library said and the crash report's first lines
# (which thread, which test) would otherwise be lost or scroll away under the stack's
# pytest frames. They are repeated last, where a CI log's tail shows.
run_pytest() {  # run_pytest LABEL PYTEST-ARGS...: pytest's exit code, its crash report shown
    local label="$1" crash_log rc=0
    shift
    crash_log="$(mktemp)"
    $BIN/pytest --capture=sys "$@" 2> >(tee "$crash_log" >&2) || rc=$?
    sleep 1  # tee writes the last of it
    if [ "$rc" -gt 128 ]; then
        echo "== $label: pytest died by signal $((rc - 128)); its last stderr lines and the crash report without library frames:" >&2
        grep -v -e '/site-packages/' -e '^Extension modules' "$crash_log" | grep -B12 -A60 -m1 '^Fatal Python error' >&2 || tail -40 "$crash_log" >&2
    fi
    rm -f "$crash_log"
    return "$rc"
}

# ORDERPROC_TEST_LANES=2 (the default of a whole run): the fault scenarios (tests/faults),
# the browser tests and the DAG tests (the two that start a live Airflow) run in a second
# pytest beside the rest. The scenarios stop, kill and
# fill brokers and databases of their own (dedicated_broker, dedicated_cluster,
# dedicated_postgres); every test uses topics, groups, schemas and an Airflow of its own on
# the shared ones; most of the scenarios' time is spent waiting for outages and lock
# expiries, not computing. The second lane's output goes to a file, shown whole when both
# are done. Arguments given: one pytest, as asked.
if [ $# -gt 0 ] || [ "$lanes" = 1 ]; then
    rc=0
    run_pytest tests --durations=40 "$@" || rc=$?
    exit "$rc"
fi

second=(tests/faults tests/browser tests/dags)
second_out="$(mktemp)"
second_rc=0
base="$(mktemp -d)"  # one --basetemp each: pytest prunes old numbered temp dirs of its own
echo "== ${second[*]}: a second pytest, its output in $second_out (shown at the end)" >&2
run_pytest "${second[*]}" --durations=20 --basetemp="$base/second" "${second[@]}" \
    >"$second_out" 2>&1 &
second_pid=$!
rc=0
ignored=()
for dir in "${second[@]}"; do ignored+=("--ignore=$dir"); done
run_pytest tests --durations=40 --basetemp="$base/first" "${ignored[@]}" || rc=$?
wait "$second_pid" || second_rc=$?
echo "== ${second[*]} (the second pytest), exit $second_rc:" >&2
cat "$second_out" >&2
rm -rf "$second_out" "$base"
echo "== exit: tests $rc, ${second[*]} $second_rc" >&2
if [ "$rc" = 0 ]; then rc="$second_rc"; fi
exit "$rc"
