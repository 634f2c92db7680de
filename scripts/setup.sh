#!/usr/bin/env bash
# Install mailmoat into .venv; with --test also the Debian packages the test suite uses.
# Idempotent: an unchanged pyproject.toml does not reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "mailmoat needs Python 3.11 or newer ($PY is $("$PY" --version 2>&1))" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi

stamp=.venv/.mailmoat-installed
sum=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
  .venv/bin/pip install -q -e ".[dev]" 2>&1 | grep -v -E "^(WARNING: Location|  |$)" || true
  .venv/bin/python -c "import mailmoat_common, aiosmtpd, aio_pika" # fails loudly when the install did
  echo "$sum" > "$stamp"
fi

[ "$want_test" = 1 ] || exit 0

# Debian packages for tests: Postfix's smtp-sink/smtp-source, swaks; the broker and Redis if absent.
need=()
command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ] || need+=(postfix)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -newermt '-1 day' 2>/dev/null | head -1)" ]; then
    apt-get update -q >/dev/null
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  # Postfix is wanted only for its test tools: make sure no system Postfix keeps port 25.
  if command -v postfix >/dev/null 2>&1; then postfix stop >/dev/null 2>&1 || true; fi
fi
