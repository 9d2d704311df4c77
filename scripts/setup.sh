#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh Debian machine, idempotently:
# a JDK 17+ and Maven (for the local Kafka broker and examples/java-producer), Node.js and npm
# (examples/node-producer), a virtualenv in .venv with llmpulse and its extras, and the ops tools
# (promtool, amtool, helm, an OpenTelemetry Collector with the Kafka exporter) used by the ops tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
say() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
# javac too: the ops tests build examples/java-producer (a JRE is enough for the broker alone).
{ command -v java >/dev/null && command -v javac >/dev/null; } || need_apt+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    say "apt-get install ${need_apt[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    say "pip install -e '.[dev,instrument]' (a few minutes the first time)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[dev,instrument]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

if [ "${LLMPULSE_SKIP_OPS_TOOLS:-0}" != 1 ]; then
    PYTHON="$VENV/bin/python" bash scripts/install-ops-tools.sh
fi
say "ready: $("$VENV/bin/llmpulse" --help >/dev/null && echo "llmpulse CLI in $VENV/bin")"
