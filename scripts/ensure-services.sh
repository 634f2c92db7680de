#!/usr/bin/env bash
# Make sure RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) answer; start a local server when
# it is installed, otherwise say in one line how to get one.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # port, seconds
  local i
  for ((i = 0; i < $2 * 2; i++)); do up "$1" && return 0; sleep 0.5; done
  return 1
}

if ! up 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_port 6379 20 || { echo "mailmoat: redis-server did not start on 127.0.0.1:6379" >&2; exit 1; }
  else
    echo "mailmoat: Redis is not reachable on 127.0.0.1:6379 and not installed: apt-get install redis-server (or: docker compose up redis)" >&2
    exit 1
  fi
fi

if ! up 5672; then
  if command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ]; then
    PATH=$PATH:/usr/sbin rabbitmq-server -detached >/dev/null 2>&1
    wait_port 5672 90 || { echo "mailmoat: rabbitmq-server did not start on 127.0.0.1:5672" >&2; exit 1; }
    timeout 60 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  else
    echo "mailmoat: RabbitMQ is not reachable on 127.0.0.1:5672 and not installed: apt-get install rabbitmq-server (or: docker compose up rabbitmq)" >&2
    exit 1
  fi
fi
