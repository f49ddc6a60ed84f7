#!/usr/bin/env bash
# The whole test suite: builds the dev chain node if needed (release, cached
# after the first time), then runs every workspace test with nextest. The
# chain-backed tests start that node themselves (`mesh-chain-node --dev --tmp`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mesh-target}"
export MESH_CHAIN_NODE="${MESH_CHAIN_NODE:-$(scripts/build-chain.sh)}"
cargo nextest run --workspace "$@"
