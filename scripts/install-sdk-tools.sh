#!/usr/bin/env bash
# Installs what the C and Python SDKs' tests use besides the Rust toolchain:
# a C compiler, valgrind (the C example runs under it) and Python 3 with
# venv (the Python package is built with maturin in a virtual environment
# the test makes). Idempotent: installs only what is missing.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cc --version | head -1
valgrind --version
python3 --version
