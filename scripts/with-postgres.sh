#!/usr/bin/env bash
# Run a command (the tests) with CONFIDE_TEST_PG pointing at a PostgreSQL server.
#
#   scripts/with-postgres.sh .venv/bin/python -m pytest tests/integration/test_db_stores.py
#
# When CONFIDE_TEST_PG is set, the command runs against that server (.ci/run does so).
# Otherwise a throwaway cluster is made for the run: initdb in a temporary directory
# (as the postgres user when run as root: PostgreSQL refuses to run as root), trust
# authentication, listening on 127.0.0.1 at a free port with its Unix socket in that
# directory, fsync off. It is stopped and removed afterwards, whatever the command's
# outcome, ^C included. The server binaries are Debian's postgresql package
# (scripts/bootstrap.sh installs it when missing).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi
if [ -n "${CONFIDE_TEST_PG:-}" ]; then
    exec "$@"
fi

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
bin="$(find_bin)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    "$root/scripts/bootstrap.sh" postgresql
    bin="$(find_bin)"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/confide-pg.XXXXXX")"
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$tmp"
    as_owner=(runuser -u postgres --)
fi

cleanup() {
    trap - EXIT INT TERM
    if [ -f "$tmp/data/postmaster.pid" ]; then
        (cd "$tmp" && "${as_owner[@]}" "$bin/pg_ctl" -D "$tmp/data" -m immediate -w stop) \
            >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$tmp"  # the postgres user may not be allowed into the caller's directory
"${as_owner[@]}" "$bin/initdb" -D "$tmp/data" -U postgres -A trust -E UTF8 --no-sync \
    >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; exit 1; }
started=""
for _ in 1 2 3 4 5; do
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if "${as_owner[@]}" "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 30 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $tmp -c fsync=off -c max_connections=300" \
        >/dev/null 2>&1; then
        started=1
        break
    fi  # the port was taken in between: try another
done
if [ -z "$started" ]; then
    echo "with-postgres: the throwaway PostgreSQL did not start:" >&2
    tail -n 20 "$tmp/server.log" >&2 || true
    exit 1
fi
"${as_owner[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres test
cd "$root"
export CONFIDE_TEST_PG="postgresql://postgres@127.0.0.1:$port/test"
echo "with-postgres: a throwaway PostgreSQL ($(basename "$(dirname "$bin")")) at $CONFIDE_TEST_PG" >&2
status=0
"$@" || status=$?
exit "$status"
