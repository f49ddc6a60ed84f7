#!/usr/bin/env bash
# The Python tools the gateway's tests drive it with: the official `openai`
# package, pinned, in a venv of its own (from PyPI).
#
#   scripts/fetch-pytools.sh        prints the venv's python last
#
# The venv lives in ${MESH_PYTOOLS:-$HOME/.cache/mesh-pytools}; it is
# reused while it holds the pinned version. The tests read the same path.
set -euo pipefail

DEST="${MESH_PYTOOLS:-$HOME/.cache/mesh-pytools}"
OPENAI="openai==3.57.0"

die() { echo "fetch-pytools: $*" >&2; exit 1; }

if [ -x "$DEST/bin/python" ] && "$DEST/bin/python" -m pip show openai 2>/dev/null | grep -qx "Version: ${OPENAI#openai==}"; then
    echo "$DEST/bin/python"
    exit 0
fi
python3 -m venv --help >/dev/null 2>&1 || die "python3's venv module is missing: apt-get install -y python3-venv"
echo "fetch-pytools: creating $DEST with $OPENAI" >&2
rm -rf "$DEST"
python3 -m venv "$DEST" || die "python3 -m venv $DEST failed (apt-get install -y python3-venv?)"
"$DEST/bin/python" -m pip install --quiet --disable-pip-version-check "$OPENAI" >&2 \
    || die "pip install $OPENAI failed (the message is above)"
echo "$DEST/bin/python"
