#!/usr/bin/env bash
# Build the mesh dev chain node (chain/substrate) in release, once.
#
# A cold build takes 30–40 minutes on 2 cores (~1,100 crates, a wasm runtime);
# afterwards cargo sees it fresh in a second. Prints the binary's path last.
# The integration tests start this binary (`mesh-chain-node --dev --tmp`).
set -euo pipefail
cd "$(dirname "$0")/../chain/substrate"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mesh-target}"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if ! rustup component list --installed | grep -q '^rust-src'; then
    rustup component add rust-src
fi

# One cargo invocation builds runtime and node with the same feature set, so
# nothing (binaryen above all) is compiled twice.
cargo build --release --locked -p mesh-chain-node >&2
echo "$CARGO_TARGET_DIR/release/mesh-chain-node"
