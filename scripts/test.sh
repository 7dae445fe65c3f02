#!/usr/bin/env bash
# Set up if needed, then run the default test suite (slow benchmarks excluded;
# run them with `scripts/test.sh -m slow`). Extra args go to pytest.
#
# The storage tests also run against a real PostgreSQL: unless DOJO_TEST_POSTGRES_URL is
# already set (or DOJO_TEST_POSTGRES=0), this starts a throwaway server on 127.0.0.1 in a
# temporary folder (installing Debian's `postgresql` package first if it is missing) and
# removes it afterwards. Where none can be had, those tests are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl}

PG_TMP=""
PG_BIN=""
PG_AS=()
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

stop_test_postgres() {
  if [ -n "$PG_TMP" ] && [ -n "$PG_BIN" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_TMP"
  fi
}

start_test_postgres() {
  PG_BIN=$(pg_bindir)
  if [ -z "$PG_BIN" ] && command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
    echo "[test] installing PostgreSQL (Debian package) for the storage tests"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        --no-install-recommends postgresql; } >/dev/null 2>&1 || echo "[test] could not install postgresql"
    PG_BIN=$(pg_bindir)
  fi
  if [ -z "$PG_BIN" ]; then
    export DOJO_TEST_POSTGRES_SKIP="no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) and apt-get could not install them"
    return 0
  fi
  PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/dojo-pg.XXXXXX")
  if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses to run as root: the cluster belongs to the package's postgres user.
    if ! id postgres >/dev/null 2>&1; then
      export DOJO_TEST_POSTGRES_SKIP="running as root and there is no 'postgres' user to own the test cluster"
      return 0
    fi
    chown postgres "$PG_TMP"
    PG_AS=(runuser -u postgres --)
  fi
  local port
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if ! "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_TMP/data" -U dojo -A trust -E UTF8 --no-sync >"$PG_TMP/initdb.log" 2>&1; then
    export DOJO_TEST_POSTGRES_SKIP="initdb failed: $(tail -1 "$PG_TMP/initdb.log")"
    return 0
  fi
  # Throwaway data: durability off for speed; loopback only.
  if ! "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 30 start -o \
      "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB -c max_connections=100" \
      >/dev/null 2>&1; then
    export DOJO_TEST_POSTGRES_SKIP="the test PostgreSQL server did not start: $(tail -1 "$PG_TMP/server.log" 2>/dev/null)"
    return 0
  fi
  export DOJO_TEST_POSTGRES_URL="postgresql://dojo@127.0.0.1:$port/postgres"
  echo "[test] PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') for the storage tests on 127.0.0.1:$port"
}

if [ -z "${DOJO_TEST_POSTGRES_URL:-}" ] && [ "${DOJO_TEST_POSTGRES:-1}" != 0 ]; then
  trap stop_test_postgres EXIT
  start_test_postgres
fi

# The browser tests (tests/security's Live page check, and tests/e2e behind the slow marker)
# drive Debian's Chromium: install it when it is missing (they skip, saying so, without it).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo -n"
  echo "[test] installing Chromium (Debian package) for the browser tests"
  { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq \
      --no-install-recommends chromium; } >/dev/null 2>&1 || echo "[test] could not install chromium; the browser tests will skip"
fi

rc=0
.venv/bin/python -m pytest -q "$@" || rc=$?
exit $rc
