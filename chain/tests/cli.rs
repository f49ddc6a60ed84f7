//! The chain CLIs from the command line, against a real dev node:
//! `keygen` → `mesh-chain create-subnet` → `register-node` → `activate-node`
//! → `mesh-chain show-node`, and their refusals.

use mesh_chain::devnode::DevNode;
use std::path::PathBuf;
use std::process::{Command, Output};

const BOB: &str = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";

/// A binary of another workspace package, next to this test's own directory
/// (`cargo nextest run --workspace` builds them all).
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not built: run `cargo build -p keygen` (or the whole workspace)",
        path.display()
    );
    path
}

fn run(bin: &str, args: &[&str], url: &str) -> Output {
    let path = match bin {
        "mesh-chain" => PathBuf::from(env!("CARGO_BIN_EXE_mesh-chain")),
        "register-node" => PathBuf::from(env!("CARGO_BIN_EXE_register-node")),
        "activate-node" => PathBuf::from(env!("CARGO_BIN_EXE_activate-node")),
        other => workspace_bin(other),
    };
    Command::new(path)
        .args(args)
        .env("MESH_RPC_URL", url)
        .env_remove("PHRASE")
        .env_remove("PRIVATE_KEY")
        .env_remove("MESH_KEY_FILE")
        .output()
        .unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn fails(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure mentioning {needle:?}"
    );
    assert!(
        stderr.contains(needle),
        "stderr lacks {needle:?}:\n{stderr}"
    );
}

#[test]
fn keygen_register_activate_show_from_the_command_line() {
    let node = DevNode::start().expect("start mesh-chain-node (run scripts/build-chain.sh first)");
    let url = node.url();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let keys: serde_json::Value = serde_json::from_str(&ok(&run(
        "keygen",
        &[
            "--path",
            &path("node.key"),
            "--bootstrap_path",
            &path("boot.key"),
            "--client_path",
            &path("client.key"),
            "--json",
        ],
        url,
    )))
    .unwrap();
    let peer = |role: &str| keys[role]["peer_id"].as_str().unwrap().to_owned();
    let (main, boot, client) = (peer("main"), peer("bootnode"), peer("client"));

    let created: serde_json::Value = serde_json::from_str(&ok(&run(
        "mesh-chain",
        &[
            "--json",
            "create-subnet",
            "--phrase",
            "//Alice",
            "--name",
            "demo",
        ],
        url,
    )))
    .unwrap();
    let subnet = created["subnet_id"].to_string();

    let register = |stake: &str, extra: &[&str]| {
        let mut args = vec![
            "--phrase",
            "//Alice",
            "--subnet_id",
            &subnet,
            "--hotkey",
            BOB,
            "--peer_id",
            &main,
            "--bootnode_peer_id",
            &boot,
            "--client_peer_id",
            &client,
            "--stake_to_be_added",
            stake,
        ];
        args.extend_from_slice(extra);
        run("register-node", &args, url)
    };
    // Refused before anything is submitted.
    fails(&register("10", &[]), "below the subnet minimum stake");
    fails(
        &register("100", &["--max_burn_amount", "0.5"]),
        "more than --max_burn_amount",
    );
    let out = register("100", &["--json"]);
    let registered: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("quote: stake 100 + burn 1 + fee"));
    assert_eq!(registered["subnet_node_id"], 1);
    // The chain refuses a second registration of the same PeerIds, by name.
    let again = run(
        "register-node",
        &[
            "--phrase",
            "//Alice",
            "--subnet_id",
            &subnet,
            "--hotkey",
            "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y",
            "--peer_id",
            &main,
            "--bootnode_peer_id",
            &boot,
            "--client_peer_id",
            &client,
            "--stake_to_be_added",
            "100",
        ],
        url,
    );
    fails(&again, "Network.PeerIdExist");

    let activated: serde_json::Value = serde_json::from_str(&ok(&run(
        "activate-node",
        &["--json", "--phrase", "//Alice", "--subnet_id", &subnet],
        url,
    )))
    .unwrap();
    assert_eq!(activated["class"], "idle");

    let shown: serde_json::Value = serde_json::from_str(&ok(&run(
        "mesh-chain",
        &[
            "--json",
            "show-node",
            "--subnet_id",
            &subnet,
            "--peer_id",
            &main,
        ],
        url,
    )))
    .unwrap();
    assert_eq!(shown["class"], "idle");
    assert_eq!(shown["peer_id"], main.as_str());
    assert_eq!(shown["hotkey"], BOB);
    assert_eq!(shown["stake"], (100u128 * mesh_chain::TOKEN).to_string());

    let staked = run(
        "mesh-chain",
        &[
            "proof-of-stake",
            "--subnet_id",
            &subnet,
            "--peer_id",
            &boot,
            "--min_class",
            "idle",
        ],
        url,
    );
    assert_eq!(ok(&staked).trim(), "true");
    let stranger = run(
        "mesh-chain",
        &[
            "proof-of-stake",
            "--subnet_id",
            &subnet,
            "--peer_id",
            "12D3KooWRkGLz4YbVmrsWK75VjFTs8NvaBu42xhAmQaP4KeQxyz1",
        ],
        url,
    );
    assert!(!stranger.status.success());
    assert_eq!(String::from_utf8_lossy(&stranger.stdout).trim(), "false");
}

#[test]
fn wrong_arguments_and_missing_chain_are_clear_errors() {
    // No signer at all.
    let out = run("activate-node", &["--subnet_id", "1"], "ws://127.0.0.1:1");
    fails(&out, "no signer");
    // Not a PeerId / not an account / not an amount: clap refuses before any connection.
    let base = [
        "--phrase",
        "//Alice",
        "--subnet_id",
        "1",
        "--hotkey",
        BOB,
        "--bootnode_peer_id",
        "x",
        "--client_peer_id",
        "y",
    ];
    let mut args = base.to_vec();
    args.extend(["--peer_id", "not-a-peer", "--stake_to_be_added", "100"]);
    fails(
        &run("register-node", &args, "ws://127.0.0.1:1"),
        "is not a libp2p PeerId",
    );
    let out = run(
        "register-node",
        &[
            "--phrase",
            "//Alice",
            "--subnet_id",
            "1",
            "--hotkey",
            "nope",
        ],
        "ws://127.0.0.1:1",
    );
    fails(&out, "is not an ss58 account address");
    let out = run(
        "mesh-chain",
        &[
            "add-stake",
            "--phrase",
            "//Alice",
            "--subnet_id",
            "1",
            "--amount",
            "1e5",
        ],
        "ws://127.0.0.1:1",
    );
    fails(&out, "is not an amount of tokens");
    // Nobody listening.
    let out = run(
        "activate-node",
        &["--phrase", "//Alice", "--subnet_id", "1"],
        "ws://127.0.0.1:1",
    );
    fails(&out, "cannot reach the chain at ws://127.0.0.1:1");
    // --help explains.
    let help = ok(&run("register-node", &["--help"], "ws://127.0.0.1:1"));
    for flag in [
        "--subnet_id",
        "--hotkey",
        "--peer_id",
        "--bootnode_peer_id",
        "--client_peer_id",
        "--bootnode",
        "--delegate_reward_rate",
        "--stake_to_be_added",
        "--max_burn_amount",
        "--unique",
        "--non_unique",
        "--rpc_url",
        "--phrase",
        "--private_key",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}
