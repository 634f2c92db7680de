#!/usr/bin/env bash
# Make sure RabbitMQ, Redis and PostgreSQL answer (MAILMOAT_AMQP_URL / MAILMOAT_REDIS_URL /
# MAILMOAT_DATABASE_URL, by default 127.0.0.1:5672, 127.0.0.1:6379 and 127.0.0.1:5432). A local server that is installed but down is started;
# otherwise one line says how to get it, and the exit status is 1.
set -uo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
WAIT=${MAILMOAT_SERVICE_WAIT:-60}

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# "host port" of a URL such as amqp://user:pass@host:port/vhost
endpoint() {
  local rest=${1#*://}
  rest=${rest##*@}
  rest=${rest%%/*}
  rest=${rest%%\?*}
  local host=${rest%:*} port=${rest##*:}
  if [ "$host" = "$rest" ] || [ -z "$port" ]; then port=$2; fi
  host=${host#[}
  host=${host%]}
  echo "${host:-127.0.0.1} $port"
}

up() { timeout 3 bash -c "exec 3<>'/dev/tcp/$1/$2'" >/dev/null 2>&1; }

local_host() { case $1 in 127.*|localhost|::1) return 0 ;; *) return 1 ;; esac; }

wait_up() {  # host port seconds
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    up "$1" "$2" && return 0
    sleep 1
  done
  up "$1" "$2"
}

start_unit() {  # systemd unit, when systemd runs this machine
  [ -d /run/systemd/system ] && systemctl start "$1" >"$log" 2>&1
}

start_rabbitmq() {
  start_unit rabbitmq-server.service && return 0
  rabbitmq-server -detached >"$log" 2>&1
}

start_redis() {
  start_unit redis-server.service && return 0
  redis-server --daemonize yes --bind 127.0.0.1 --port "$1" --save "" --appendonly no >"$log" 2>&1
}

pg_cluster() {  # "version name" of Debian's cluster (postgresql-common) on a port
  command -v pg_lsclusters >/dev/null 2>&1 || return 1
  local version name port
  while read -r version name port _; do
    [ "$port" = "$1" ] && { echo "$version $name"; return 0; }
  done < <(pg_lsclusters --no-header 2>/dev/null)
  return 1
}

start_postgresql() {  # version name
  start_unit "postgresql@$1-$2.service" && return 0
  pg_ctlcluster "$1" "$2" start >"$log" 2>&1
}

read -r amqp_host amqp_port < <(endpoint "${MAILMOAT_AMQP_URL:-amqp://127.0.0.1:5672/}" 5672)
read -r redis_host redis_port < <(endpoint "${MAILMOAT_REDIS_URL:-redis://127.0.0.1:6379/0}" 6379)
read -r pg_host pg_port < <(endpoint "${MAILMOAT_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/mailmoat}" 5432)

absent=()   # "what|package|compose service"
failed=0

if ! up "$redis_host" "$redis_port"; then
  if ! local_host "$redis_host"; then
    echo "mailmoat: Redis at $redis_host:$redis_port is not reachable (MAILMOAT_REDIS_URL)" >&2
    failed=1
  elif command -v redis-server >/dev/null 2>&1; then
    start_redis "$redis_port"
    if ! wait_up "$redis_host" "$redis_port" 20; then
      cat "$log" >&2
      echo "mailmoat: redis-server did not start on $redis_host:$redis_port" >&2
      failed=1
    fi
  else
    absent+=("Redis ($redis_host:$redis_port)|redis-server|redis")
  fi
fi

if ! up "$amqp_host" "$amqp_port"; then
  if ! local_host "$amqp_host"; then
    echo "mailmoat: RabbitMQ at $amqp_host:$amqp_port is not reachable (MAILMOAT_AMQP_URL)" >&2
    failed=1
  elif command -v rabbitmq-server >/dev/null 2>&1; then
    start_rabbitmq
    if wait_up "$amqp_host" "$amqp_port" "$WAIT"; then
      timeout 30 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
    else
      cat "$log" >&2
      echo "mailmoat: RabbitMQ did not open $amqp_host:$amqp_port within ${WAIT}s (see /var/log/rabbitmq/)" >&2
      failed=1
    fi
  else
    absent+=("RabbitMQ ($amqp_host:$amqp_port)|rabbitmq-server|rabbitmq")
  fi
fi

if ! up "$pg_host" "$pg_port"; then
  if ! local_host "$pg_host"; then
    echo "mailmoat: PostgreSQL at $pg_host:$pg_port is not reachable (MAILMOAT_DATABASE_URL)" >&2
    failed=1
  elif cluster=$(pg_cluster "$pg_port"); then
    read -r pg_version pg_name <<<"$cluster"
    start_postgresql "$pg_version" "$pg_name"
    if ! wait_up "$pg_host" "$pg_port" "$WAIT"; then
      cat "$log" >&2
      echo "mailmoat: PostgreSQL $pg_version/$pg_name did not open $pg_host:$pg_port within ${WAIT}s (see /var/log/postgresql/)" >&2
      failed=1
    fi
  elif command -v pg_lsclusters >/dev/null 2>&1; then
    echo "mailmoat: no PostgreSQL cluster on port $pg_port (pg_lsclusters; pg_createcluster)" >&2
    failed=1
  else
    absent+=("PostgreSQL ($pg_host:$pg_port)|postgresql|postgres")
  fi
fi

if [ ${#absent[@]} -gt 0 ]; then
  what=() pkgs=() compose=()
  for item in "${absent[@]}"; do
    IFS='|' read -r w p c <<<"$item"
    what+=("$w") pkgs+=("$p") compose+=("$c")
  done
  joined=$(printf '%s and ' "${what[@]}")
  verb=is
  [ ${#what[@]} -gt 1 ] && verb=are
  echo "mailmoat: ${joined% and } $verb not running and not installed: apt-get install ${pkgs[*]} (or: docker compose up -d ${compose[*]})" >&2
  failed=1
fi
exit "$failed"
