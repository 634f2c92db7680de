#!/usr/bin/env bash
# make bench: mailmoat end to end against a private Postfix relay (see bench/README.md).
#   bench/run.sh              the full comparison (BENCH_MESSAGES, default 5000)
#   bench/run.sh --profile    py-spy on every mailmoat service during the rate run
#   bench/run.sh --only postfix|mailmoat, --messages N, ... (bench/e2e.py --help)
#   BENCH_HYGIENE=1 bench/run.sh (or --hygiene): every filter stage, against Postfix + Rspamd + clamd
#   then bench/connection_filter.py (BENCH_CF_MESSAGES, BENCH_CF_E2E_MESSAGES; not with --only/--profile;
#   BENCH_CONNECTION_FILTER=0 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for tool in /usr/sbin/smtp-source /usr/sbin/smtp-sink /usr/sbin/postfix rabbitmqctl redis-cli /usr/bin/rspamd /usr/sbin/clamd \
    /usr/sbin/unbound /usr/sbin/unbound-control; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is missing (scripts/setup.sh --test)" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then
  echo "bench: run as root (the private Postfix instance and smtp-sink -u need it)" >&2
  exit 1
fi
if [[ " $* " == *" --profile "* ]] && [ ! -x "$(dirname "$PY")/py-spy" ] && ! command -v py-spy >/dev/null; then
  "$PY" -m pip install -q py-spy
fi
# e2e.py stops and removes everything it started (gateway, Postfix instance, sinks, vhost, temp dir),
# also on SIGINT/SIGTERM; forward those signals to it rather than leaving it orphaned.
"$PY" bench/e2e.py "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
status=0
wait "$child" || status=$?
if kill -0 "$child" 2>/dev/null; then wait "$child" || status=$?; fi
# The connection filter stage: its own msgs/s and end-to-end msgs/s with it on (BENCH_CONNECTION_FILTER=0: skip).
hygiene=0
if [[ " $* " == *" --hygiene "* ]] || { [ -n "${BENCH_HYGIENE:-}" ] && [ "${BENCH_HYGIENE}" != 0 ]; }; then hygiene=1; fi
if [ "$status" = 0 ] && [ "${BENCH_CONNECTION_FILTER:-1}" != 0 ] && [ "$hygiene" = 0 ] \
    && [[ " $* " != *" --profile "* && " $* " != *" --only "* ]]; then
  "$PY" bench/connection_filter.py &
  child=$!
  wait "$child" || status=$?
  if kill -0 "$child" 2>/dev/null; then wait "$child" || status=$?; fi
fi
exit "$status"
