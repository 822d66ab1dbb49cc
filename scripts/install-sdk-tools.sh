#!/usr/bin/env bash
# Installs what the C and Python SDKs' tests use besides the Rust toolchain:
# a C compiler, valgrind (the C example runs under it), Python 3 with
# venv (the Python package is built with maturin in a virtual environment
# the test makes), and schemathesis, the API fuzzer the e2e test
# `openapi::schemathesis_*` runs against /v1/openapi.json, in its own
# virtual environment under the target directory, and Chromium with
# chromedriver, the browser the e2e test `dashboard::*` drives the web
# dashboard in. Idempotent: installs only what is missing.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Pinned: a new release may judge the same answers differently. The e2e
# test looks for it here (crates/tessera-cli/tests/e2e/openapi.rs).
schemathesis_version="4.32.5"
repo="$(cd "$(dirname "$0")/.." && pwd)"
schemathesis_venv="${CARGO_TARGET_DIR:-$repo/target}/schemathesis-venv"
if [ "$("$schemathesis_venv/bin/schemathesis" --version
chromedriver --version 2>/dev/null)" != "schemathesis, version $schemathesis_version" ]; then
  echo "installing: schemathesis $schemathesis_version into $schemathesis_venv"
  python3 -m venv --clear "$schemathesis_venv"
  "$schemathesis_venv/bin/python" -m pip install --disable-pip-version-check -q "schemathesis==$schemathesis_version"
fi

cc --version | head -1
valgrind --version
python3 --version
"$schemathesis_venv/bin/schemathesis" --version
chromedriver --version
