#!/usr/bin/env bash
# Builds weft's Debian package with cargo-deb: the binary, the systemd unit, the example
# config (a conffile), the `weft` system user (sysusers.d), shell completions and the man
# page, all generated from the binary being packaged.
#
# Usage: node/dist/package-deb.sh [--binary PATH] [--out DIR]
#   --binary PATH  package this already-built weft (default: cargo build --release)
#   --out DIR      where the .deb goes (default: target/debian); its path is printed last
# Needs: cargo-deb (`cargo install cargo-deb --locked`; tests/install-deps.sh does it).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
BIN="" OUT="$REPO/target/debian"
while [ $# -gt 0 ]; do
  case $1 in
    --binary) BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
command -v cargo-deb >/dev/null || { echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 2; }
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ -z "$BIN" ]; then
  cargo build --release --locked -p weft-node
  BIN=$TARGET_DIR/release/weft
fi
[ -x "$BIN" ] || { echo "no weft binary at $BIN" >&2; exit 2; }

# cargo-deb reads the assets from paths in node/Cargo.toml: a staging profile directory
# holds the binary being packaged, and target/dist the files generated from it.
STAGE=$TARGET_DIR/deb-stage
mkdir -p "$STAGE" "$REPO/target/dist"
cp "$BIN" "$STAGE/weft"
DIST=$REPO/target/dist
"$BIN" completions bash >"$DIST/weft.bash"
"$BIN" completions zsh >"$DIST/_weft"
"$BIN" completions fish >"$DIST/weft.fish"
"$BIN" man | gzip -9n >"$DIST/weft.1.gz"

mkdir -p "$OUT"
# --profile deb-stage: the asset path target/release/weft is read from target/deb-stage/.
deb=$(cargo deb -p weft-node --no-build --profile deb-stage --strip -o "$OUT" 2>&1 | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb failed: $deb" >&2; exit 1; }
echo "$deb"
