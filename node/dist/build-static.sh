#!/usr/bin/env bash
# Builds a statically linked x86_64 weft (musl libc): one file with no library
# dependencies, for hosts without the .deb. Prints the binary's path last.
#   target/x86_64-unknown-linux-musl/release/weft
# Needs: the rustup target x86_64-unknown-linux-musl (added here if missing) and musl-gcc
# from Debian's musl-tools (aws-lc, the TLS crypto, has C and assembly to compile).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TARGET=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
command -v musl-gcc >/dev/null || { echo "musl-gcc is missing: apt-get install musl-tools" >&2; exit 2; }
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --release --locked -p weft-node --target "$TARGET"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/$TARGET/release/weft
# Refuse to hand out something that is not static after all.
if ldd "$BIN" >/dev/null 2>&1 && ! ldd "$BIN" 2>&1 | grep -q "statically linked"; then
  echo "$BIN is dynamically linked:" >&2; ldd "$BIN" >&2; exit 1
fi
"$BIN" --version >&2
echo "$BIN"
