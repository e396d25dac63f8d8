#!/usr/bin/env bash
# A private PostgreSQL server in a folder, for the tests and the local run command.
#
#   deploy/local/pg.sh start DIR [PORT]   initdb into DIR/data on first use, start the server
#                                         (a no-op when it is already running), create the
#                                         database `mamba`, print its URL
#   deploy/local/pg.sh stop DIR           fast shutdown (a no-op when it is not running)
#   deploy/local/pg.sh url DIR            print the URL of the server in DIR
#
# The URL is postgresql://mamba@127.0.0.1:PORT/mamba (database superuser `mamba`, trust
# authentication on the unix socket in DIR and on 127.0.0.1 only; never expose it).
# PORT defaults to the one DIR was started with before, else to a free port from 55432 up;
# it is remembered in DIR/port. The server log is DIR/server.log.
#
# initdb and postgres refuse to run as root. As root the server runs as the OS user in
# $MAMBA_PG_OS_USER (default `postgres`, which the Debian package creates; a missing user
# is created as a system user without a login shell), and DIR is chown'ed to it; the
# folders above DIR must be traversable by that user. As any other user the server runs
# as that user.
#
# Environment: MAMBA_PG_BIN (folder with initdb/pg_ctl; default the newest
# /usr/lib/postgresql/*/bin), MAMBA_PG_NOSYNC=1 (fsync off: throwaway test servers only).
set -euo pipefail

usage() { echo "usage: $0 start|stop|url DIR [PORT]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
want_port=${3:-}

bin=${MAMBA_PG_BIN:-}
if [ -z "$bin" ]; then
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
[ -n "$bin" ] && [ -x "$bin/pg_ctl" ] || { echo "pg.sh: no PostgreSQL server binaries (install postgresql)" >&2; exit 1; }

if [ "$cmd" = start ]; then
  mkdir -p "$dir"
elif [ ! -d "$dir" ]; then
  [ "$cmd" = stop ] && exit 0
  echo "pg.sh: no server in $dir" >&2
  exit 1
fi
dir=$(cd "$dir" && pwd)
data=$dir/data

as_server=()
if [ "$(id -u)" -eq 0 ]; then
  os_user=${MAMBA_PG_OS_USER:-postgres}
  if ! id -u "$os_user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$os_user" 2>/dev/null || id -u "$os_user" >/dev/null
  fi
  as_server=(runuser -u "$os_user" --)
fi
run() { "${as_server[@]}" "$@"; }

url_of() { echo "postgresql://mamba@127.0.0.1:$(cat "$dir/port")/mamba"; }
running() { [ -f "$data/PG_VERSION" ] && run "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "$cmd" in
  url)
    [ -f "$dir/port" ] || { echo "pg.sh: no server in $dir" >&2; exit 1; }
    url_of
    ;;
  stop)
    if running; then
      run "$bin/pg_ctl" stop -D "$data" -m fast -w >/dev/null
    fi
    ;;
  start)
    if running; then
      url_of
      exit 0
    fi
    if [ -n "$want_port" ]; then
      port=$want_port
    elif [ -f "$dir/port" ]; then
      port=$(cat "$dir/port")
    else
      port=55432
      while ! port_free "$port"; do port=$((port + 1)); done
    fi
    echo "$port" >"$dir/port"
    if [ "${#as_server[@]}" -gt 0 ]; then
      chown -R "$os_user" "$dir"
      run test -w "$dir" || {
        echo "pg.sh: the server user $os_user cannot reach $dir (a folder above it is not traversable)" >&2
        exit 1
      }
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
      run "$bin/initdb" -D "$data" --username=mamba --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
      {
        echo "# pg.sh: private server"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "max_connections = 50"
        echo "shared_buffers = 32MB"
        if [ "${MAMBA_PG_NOSYNC:-0}" = 1 ]; then
          echo "fsync = off"
          echo "synchronous_commit = off"
          echo "full_page_writes = off"
        fi
      } >>"$data/postgresql.conf"
    fi
    # The port goes on the command line so that a later start can move the server.
    if ! run "$bin/pg_ctl" start -D "$data" -w -t 60 -l "$dir/server.log" -o "-p $port" >/dev/null; then
      tail -n 20 "$dir/server.log" >&2 || true
      exit 1
    fi
    exists=$(run "$bin/psql" -h "$dir" -p "$port" -U mamba -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'mamba'")
    if [ "$exists" != 1 ]; then
      run "$bin/psql" -h "$dir" -p "$port" -U mamba -d postgres -qc "CREATE DATABASE mamba" >/dev/null
    fi
    url_of
    ;;
  *) usage ;;
esac
