#!/usr/bin/env bash
# Regenerate chain/metadata/mesh-dev.scale — the runtime metadata the typed
# subxt API in `mesh-chain` is generated from — from a freshly built dev node.
# Run it after changing the runtime or the network pallet; the test
# `pinned_metadata_matches_the_node` fails until you do.
set -euo pipefail
cd "$(dirname "$0")/.."
node="$(scripts/build-chain.sh)"
log="$(mktemp)"
"$node" --dev --tmp --rpc-port 0 --port 0 --no-prometheus --no-telemetry --no-mdns 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
for _ in $(seq 1 240); do
    addr="$(grep -o 'Running JSON-RPC server: addr=[^, ]*' "$log" | head -1 | sed 's/.*addr=//')" || true
    [ -n "$addr" ] && break
    sleep 0.5
done
[ -n "$addr" ] || { echo "the node did not start its RPC server:" >&2; tail -20 "$log" >&2; exit 1; }
curl -sSf -H 'Content-Type: application/json' \
    -d '{"id":1,"jsonrpc":"2.0","method":"state_getMetadata","params":[]}' "http://$addr" \
    | python3 -c 'import json,sys; sys.stdout.buffer.write(bytes.fromhex(json.load(sys.stdin)["result"][2:]))' \
    > chain/metadata/mesh-dev.scale
echo "wrote chain/metadata/mesh-dev.scale ($(wc -c < chain/metadata/mesh-dev.scale) bytes)"
