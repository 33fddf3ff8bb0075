#!/usr/bin/env bash
# Installs everything weft's tests need on Debian: the system packages below and cargo-deb
# (the .deb the systemd fleet test installs). Idempotent. Called by tests/run.sh, the
# README's test command; uses sudo when not root.
set -euo pipefail

packages=(
  iproute2           # ip netns / veth for fault tests and benchmarks
  nftables           # packet loss and one-way cuts (this kernel has no netem)
  systemd-container  # systemd-nspawn for the systemd unit test
  debootstrap        # the Debian root that test boots
  jq                 # JSON checks in tests/systemd/run.sh
  chromium           # headless browser for the dashboard test
  chromium-driver    # WebDriver for it
  stunnel4           # benchmark baseline: an stunnel mTLS pair
  haproxy            # benchmark baseline: an haproxy mTLS pair
  wrk                # benchmark: closed-loop maximum req/s
  prometheus         # promtool: /metrics must pass `promtool check metrics`
  nginx-light        # an h2c-only backend (protocol = "http2")
  nghttp2-client     # h2load against it through the mesh
  python3-grpcio     # a real gRPC server and client (protocol = "grpc")
  python3-websockets # a real WebSocket echo through the mesh (Upgrade)
  curl               # 1 GiB up and down through the mesh
  bind9-dnsutils     # dig against the agent's .weft DNS
  dpkg-dev           # dpkg-shlibdeps: the .deb's library dependencies (cargo-deb)
  binutils           # strip, for the packaged binary
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# The official OpenTelemetry protobuf definitions (PyPI), for the receiver that decodes the
# spans the agents export (tests/clients/otlp_receiver.py); Debian's protobuf is too old.
OTLP_PY=/var/cache/weft-test/otlp-py
if ! PYTHONPATH=$OTLP_PY python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
  $SUDO mkdir -p "$OTLP_PY"
  $SUDO python3 -m pip install -q --disable-pip-version-check --target "$OTLP_PY" 'opentelemetry-proto==1.45.2'
  echo "install-deps: installed opentelemetry-proto into $OTLP_PY"
fi

# cargo-deb builds the package the systemd fleet test installs (node/dist/package-deb.sh).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
  echo "install-deps: installed cargo-deb $CARGO_DEB_VERSION"
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all test packages present"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"

