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
# Metadata version 16 (mesh_chain::METADATA_VERSION): unlike state_getMetadata
# (version 14) it lists the runtime APIs (e.g. NetworkRuntimeApi), and it is the
# version subxt checks the generated code against.
curl -sSf -H 'Content-Type: application/json' \
    -d '{"id":1,"jsonrpc":"2.0","method":"state_call","params":["Metadata_metadata_at_version","0x10000000"]}' \
    "http://$addr" | python3 -c '
import json, sys
raw = bytes.fromhex(json.load(sys.stdin)["result"][2:])
assert raw[0] == 1, "the node has no metadata version 16"
# SCALE Option<Vec<u8>>: 0x01, compact length, bytes.
mode = raw[1] & 3
if mode == 0: n, off = raw[1] >> 2, 2
elif mode == 1: n, off = int.from_bytes(raw[1:3], "little") >> 2, 3
elif mode == 2: n, off = int.from_bytes(raw[1:5], "little") >> 2, 5
else: raise SystemExit("metadata too large")
body = raw[off:off + n]
assert len(body) == n and body[:4] == b"meta", "not runtime metadata"
sys.stdout.buffer.write(body)
' > chain/metadata/mesh-dev.scale
echo "wrote chain/metadata/mesh-dev.scale ($(wc -c < chain/metadata/mesh-dev.scale) bytes)"
