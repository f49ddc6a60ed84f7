#!/usr/bin/env bash
# The Python tools the gateway's tests drive it with, pinned, in a venv of
# their own (from PyPI): the official `openai` package, and `selenium` for
# the chat page in headless Chromium (Debian's chromium and chromium-driver).
#
#   scripts/fetch-pytools.sh        prints the venv's python last
#
# The venv lives in ${MESH_PYTOOLS:-$HOME/.cache/mesh-pytools}; it is
# reused while it holds the pinned version. The tests read the same path.
set -euo pipefail

DEST="${MESH_PYTOOLS:-$HOME/.cache/mesh-pytools}"
PINS=("openai==3.57.0" "selenium==4.45.0")

die() { echo "fetch-pytools: $*" >&2; exit 1; }

installed() {
    local frozen
    frozen="$("$DEST/bin/python" -m pip freeze 2>/dev/null)" || return 1
    for pin in "${PINS[@]}"; do
        grep -qx "$pin" <<<"$frozen" || return 1
    done
}
if [ -x "$DEST/bin/python" ] && installed; then
    echo "$DEST/bin/python"
    exit 0
fi
python3 -m venv --help >/dev/null 2>&1 || die "python3's venv module is missing: apt-get install -y python3-venv"
echo "fetch-pytools: creating $DEST with ${PINS[*]}" >&2
rm -rf "$DEST"
python3 -m venv "$DEST" || die "python3 -m venv $DEST failed (apt-get install -y python3-venv?)"
"$DEST/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" >&2 \
    || die "pip install ${PINS[*]} failed (the message is above)"
echo "$DEST/bin/python"
