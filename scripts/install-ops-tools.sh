#!/usr/bin/env bash
# Installs the binaries the ops tests need, idempotently:
#   promtool + prometheus   (Debian package "prometheus")
#   amtool + alertmanager   (Debian package "prometheus-alertmanager")
#   helm                    (built from the Go module proxy into ~/.cache/llmpulse/tools/bin)
#   otelcol-llmpulse        an OpenTelemetry Collector with only what deploy/otel-collector/config.yaml uses
#                           (otlp receiver, memory_limiter, batch, the contrib kafka exporter), built from the Go
#                           module proxy by the Collector Builder into the same bin dir; about 5 minutes cold on
#                           2 cores (1.5 GB of Go module and build cache), seconds when the Go caches are warm
#   Python validators       promql-parser, check-jsonschema (bundles the compose-spec schema) and
#                           kubernetes-validate (bundles Kubernetes schemas), when not importable yet
# No kubeconform: it builds from the module proxy, but it validates only against JSON schemas fetched from
# the network (or standalone copies), which this workplace cannot reach; kubernetes-validate's bundled
# schemas are not standalone. tests/ops/test_helm.py validates with kubernetes-validate instead.
# Nothing is started: the Debian packages ship services, and a policy-rc.d that refuses every start
# keeps them stopped while apt runs.
#
# Env: LLMPULSE_TOOLS_DIR (default ~/.cache/llmpulse/tools), HELM_VERSION, OTELCOL_VERSION with
#      OTELCOL_STABLE_VERSION and OTELCOL_CONTRIB_VERSION (one Collector release: all three move together),
#      PYTHON (default python3),
#      LLMPULSE_SKIP_PY_VALIDATORS=1 to leave the Python environment alone.
set -euo pipefail

TOOLS_DIR="${LLMPULSE_TOOLS_DIR:-$HOME/.cache/llmpulse/tools}"
BIN_DIR="$TOOLS_DIR/bin"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
OTELCOL_VERSION="${OTELCOL_VERSION:-v0.165.0}"                  # core components and the builder
OTELCOL_STABLE_VERSION="${OTELCOL_STABLE_VERSION:-v1.71.0}"     # the core modules at 1.x of that release
OTELCOL_CONTRIB_VERSION="${OTELCOL_CONTRIB_VERSION:-v0.165.1}"  # the kafka exporter
PYTHON="${PYTHON:-python3}"
mkdir -p "$BIN_DIR"
export PATH="$BIN_DIR:$PATH"

say() { printf 'install-ops-tools: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian_tools() {
    if command -v promtool >/dev/null && command -v amtool >/dev/null; then
        say "promtool and amtool present ($(command -v promtool), $(command -v amtool)): skipping apt"
        return
    fi
    if ! command -v apt-get >/dev/null; then
        say "WARNING: no apt-get here; install promtool and amtool by hand"
        return
    fi
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        # Exit code 101 = "action forbidden": invoke-rc.d then starts no service during the install.
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=1
    fi
    say "apt-get install prometheus prometheus-alertmanager (services are not started)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus prometheus-alertmanager >/dev/null
    if [ "$created_policy" -eq 1 ]; then as_root rm -f "$policy"; fi
    say "installed: $(promtool --version 2>&1 | head -n1)"
    say "installed: $(amtool --version 2>&1 | head -n1)"
}

go_tool() {  # go_tool NAME MODULE_PATH VERSION
    local name="$1" module="$2" version="$3"
    if [ -x "$BIN_DIR/$name" ]; then
        say "$name present in $BIN_DIR: skipping build"
        return 0
    fi
    if ! command -v go >/dev/null; then
        say "WARNING: no go toolchain; cannot build $name"
        return 1
    fi
    say "building $name from $module@$version (takes a few minutes on 2 cores)"
    if GOBIN="$BIN_DIR" GOFLAGS=-mod=mod go install "$module@$version"; then
        say "built $BIN_DIR/$name"
    else
        say "WARNING: go install $module@$version failed"
        return 1
    fi
}

otelcol_manifest() {  # the Collector Builder's manifest for otelcol-llmpulse, built into $1
    cat <<EOF
dist:
  module: llmpulse.local/otelcol-llmpulse
  name: otelcol-llmpulse
  description: OpenTelemetry Collector for llmpulse ops tests (deploy/otel-collector/config.yaml)
  version: ${OTELCOL_VERSION#v}
  output_path: $1
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $OTELCOL_VERSION
processors:
  - gomod: go.opentelemetry.io/collector/processor/batchprocessor $OTELCOL_VERSION
  - gomod: go.opentelemetry.io/collector/processor/memorylimiterprocessor $OTELCOL_VERSION
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/kafkaexporter $OTELCOL_CONTRIB_VERSION
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $OTELCOL_STABLE_VERSION
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $OTELCOL_STABLE_VERSION
  - gomod: go.opentelemetry.io/collector/confmap/provider/yamlprovider $OTELCOL_STABLE_VERSION
EOF
}

install_otelcol() {
    local name=otelcol-llmpulse work="$TOOLS_DIR/otelcol"
    local manifest gomod components missing=0
    manifest="$(otelcol_manifest "$work/src")"
    # Cached when the binary's own component list names every module of the manifest at its pinned version.
    if [ -x "$BIN_DIR/$name" ]; then
        components="$("$BIN_DIR/$name" components 2>/dev/null || true)"
        while read -r gomod; do
            grep -qF "module: $gomod" <<<"$components" || missing=1
        done < <(sed -n 's/^ *- gomod: //p' <<<"$manifest")
        if [ "$missing" -eq 0 ]; then
            say "$name present in $BIN_DIR with the pinned components: skipping build"
            return 0
        fi
        say "$name in $BIN_DIR is not built from the pinned components: rebuilding"
    fi
    if ! command -v go >/dev/null; then
        say "WARNING: no go toolchain; cannot build $name"
        return 1
    fi
    mkdir -p "$work/bin"
    if ! "$work/bin/builder" version 2>/dev/null | grep -qF "$OTELCOL_VERSION"; then
        say "building the Collector Builder go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION"
        if ! GOBIN="$work/bin" go install "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION"; then
            say "WARNING: go install of the Collector Builder failed"
            return 1
        fi
    fi
    printf '%s\n' "$manifest" >"$work/manifest.yaml"
    say "building $name (Collector $OTELCOL_VERSION, kafka exporter $OTELCOL_CONTRIB_VERSION; ~5 minutes cold on 2 cores)"
    rm -rf "$work/src"
    if "$work/bin/builder" --config "$work/manifest.yaml" >"$work/build.log" 2>&1; then
        mv -f "$work/src/$name" "$BIN_DIR/$name"
        say "built $BIN_DIR/$name"
    else
        tail -n 20 "$work/build.log" >&2
        say "WARNING: the Collector Builder failed (log: $work/build.log)"
        return 1
    fi
}

install_python_validators() {
    if [ "${LLMPULSE_SKIP_PY_VALIDATORS:-0}" = 1 ]; then
        say "LLMPULSE_SKIP_PY_VALIDATORS=1: not touching Python packages"
        return
    fi
    # Ranges: check-jsonschema 0.35+ needs click>=8.5, which faust-streaming (click<8.4) refuses.
    local wanted=() spec module
    for spec in "promql_parser=promql-parser>=0.5,<1" \
                "check_jsonschema=check-jsonschema>=0.30,<0.35" \
                "kubernetes_validate=kubernetes-validate>=1.30,<2"; do
        module="${spec%%=*}"
        if "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)"; then
            say "python: $module present"
        else
            wanted+=("${spec#*=}")
        fi
    done
    if [ "${#wanted[@]}" -gt 0 ]; then
        say "pip install ${wanted[*]}"
        "$PYTHON" -m pip install --quiet "${wanted[@]}"
    fi
}

install_debian_tools
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" || true
install_otelcol || true
install_python_validators

say "summary:"
for tool in promtool amtool helm otelcol-llmpulse; do
    if command -v "$tool" >/dev/null; then
        say "  $tool -> $(command -v "$tool")"
    else
        say "  $tool -> MISSING"
    fi
done
say "add $BIN_DIR to PATH, or let tests/ops find it there"
