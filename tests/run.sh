#!/usr/bin/env bash
# The test command (README): on a fresh Debian machine with only Rust, this is all it takes.
# It installs what the tests need (tests/install-deps.sh: Debian packages and cargo-deb;
# idempotent, quick when all is present; uses sudo when not root), then runs the whole
# suite. Extra arguments go to `cargo test`, e.g. `bash tests/run.sh -p weft-node`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
exec cargo test --workspace "$@"
