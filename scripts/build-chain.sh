#!/usr/bin/env bash
# Build the mesh dev chain node (chain/substrate) in release, once.
#
# A cold build takes 30–40 minutes on 2 cores (~1,100 crates, a wasm runtime);
# afterwards cargo sees it fresh in a second. Prints the binary's path last.
# The integration tests start this binary (`mesh-chain-node --dev --tmp`).
set -euo pipefail
cd "$(dirname "$0")/../chain/substrate"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mesh-target}"
. ../../scripts/lib/prereqs.sh
need_chain_tools

# One cargo invocation builds runtime and node with the same feature set, so
# nothing (binaryen above all) is compiled twice.
cargo build --release --locked -p mesh-chain-node >&2 \
    || die "cargo build of the dev chain node failed (the compiler's message is above)"
echo "$CARGO_TARGET_DIR/release/mesh-chain-node"
