#!/usr/bin/env bash
# Runs the whole test suite. The tests start their own redis-server processes on free
# loopback ports, so redis-server must be installed; on Debian/Ubuntu this installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it with apt-get" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

cargo test --all-features "$@"
