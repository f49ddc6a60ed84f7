//! End-to-end tests of the `keygen` binary.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

fn keygen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keygen"))
}

fn fixture(name: &str) -> PathBuf {
    // The runtime value (cargo and nextest set it) rather than the compiled
    // one: a test binary reused from another checkout still finds the files.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.join("../tests/fixtures").join(name)
}

struct Paths {
    dir: TempDir,
}

impl Paths {
    fn new() -> Self {
        Paths {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn main(&self) -> PathBuf {
        self.dir.path().join("private_key.key")
    }

    fn bootnode(&self) -> PathBuf {
        self.dir.path().join("bootstrap_private_key.key")
    }

    fn client(&self) -> PathBuf {
        self.dir.path().join("client_private_key.key")
    }

    fn all(&self) -> [PathBuf; 3] {
        [self.main(), self.bootnode(), self.client()]
    }

    /// `keygen` with the three paths in the temporary directory.
    fn keygen(&self) -> Command {
        let mut cmd = keygen();
        cmd.arg("--path")
            .arg(self.main())
            .arg("--bootstrap_path")
            .arg(self.bootnode())
            .arg("--client_path")
            .arg(self.client());
        cmd
    }
}

fn run_json(cmd: &mut Command) -> Value {
    let out = cmd
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("keygen --json prints JSON")
}

fn peer_ids(json: &Value) -> [String; 3] {
    ["main", "bootnode", "client"].map(|role| json[role]["peer_id"].as_str().unwrap().to_string())
}

fn show_peer_id(path: &Path) -> String {
    let out = keygen()
        .arg("show")
        .arg(path)
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: Value = serde_json::from_slice(&out).unwrap();
    json["peer_id"].as_str().unwrap().to_string()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generates_three_private_keys_with_distinct_peer_ids() {
    let paths = Paths::new();
    let out = paths
        .keygen()
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for path in paths.all() {
        assert!(path.is_file(), "{} written", path.display());
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    let ids: Vec<String> = paths.all().iter().map(|p| show_peer_id(p)).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        3,
        "distinct PeerIds: {ids:?}"
    );
    for (role, (path, id)) in ["main", "bootnode", "client"]
        .iter()
        .zip(paths.all().iter().zip(&ids))
    {
        assert!(id.starts_with("12D3KooW"), "{id}");
        let line = text
            .lines()
            .find(|l| l.starts_with(role))
            .unwrap_or_else(|| panic!("a {role} line in {text}"));
        assert!(
            line.contains(&path.display().to_string()) && line.ends_with(id.as_str()),
            "{line}"
        );
    }
}

#[test]
fn json_output_matches_the_files() {
    let paths = Paths::new();
    let json = run_json(&mut paths.keygen());
    assert_eq!(json["key_type"], "ed25519");
    let ids = peer_ids(&json);
    for (role, path) in ["main", "bootnode", "client"].iter().zip(paths.all()) {
        assert_eq!(
            json[role]["path"].as_str().unwrap(),
            path.display().to_string()
        );
    }
    for (id, path) in ids.iter().zip(paths.all()) {
        assert_eq!(
            &show_peer_id(&path),
            id,
            "show prints the PeerId printed at generation"
        );
    }
}

#[test]
fn refuses_to_overwrite_and_writes_nothing() {
    let paths = Paths::new();
    // Only the client key exists: nothing at all may be written.
    fs::write(paths.client(), b"precious").unwrap();
    let assert = paths.keygen().assert().failure();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        err.contains("refusing to overwrite") && err.contains("client_private_key.key"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(!paths.main().exists(), "main key must not be written");
    assert!(
        !paths.bootnode().exists(),
        "bootnode key must not be written"
    );
    assert_eq!(fs::read(paths.client()).unwrap(), b"precious");

    // A complete set is not replaced either.
    fs::remove_file(paths.client()).unwrap();
    let first = peer_ids(&run_json(&mut paths.keygen()));
    paths.keygen().assert().failure();
    for (id, path) in first.iter().zip(paths.all()) {
        assert_eq!(&show_peer_id(&path), id);
    }
}

#[test]
fn force_overwrites() {
    let paths = Paths::new();
    let first = peer_ids(&run_json(&mut paths.keygen()));
    let second = peer_ids(&run_json(paths.keygen().arg("--force")));
    for ((old, new), path) in first.iter().zip(&second).zip(paths.all()) {
        assert_ne!(old, new);
        assert_eq!(&show_peer_id(&path), new);
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
    }
}

#[test]
fn rsa_keys_with_kebab_case_flags() {
    let dir = tempfile::tempdir().unwrap();
    let [main, boot, client] = ["a.key", "b.key", "c.key"].map(|n| dir.path().join(n));
    let json = run_json(
        keygen()
            .arg("--path")
            .arg(&main)
            .arg("--bootstrap-path")
            .arg(&boot)
            .arg("--client-path")
            .arg(&client)
            .args(["--key-type", "RSA"]),
    );
    assert_eq!(json["key_type"], "rsa");
    let ids = peer_ids(&json);
    for (id, path) in ids.iter().zip([&main, &boot, &client]) {
        assert!(id.starts_with("Qm"), "{id}");
        assert_eq!(&show_peer_id(path), id);
    }
    let out = keygen()
        .arg("show")
        .arg(&main)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("rsa") && text.contains(&ids[0]), "{text}");
}

#[test]
fn bad_key_type_fails() {
    let paths = Paths::new();
    let assert = paths
        .keygen()
        .args(["--key_type", "secp256k1"])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        err.contains("secp256k1") && err.contains("ed25519 or rsa"),
        "{err}"
    );
    for path in paths.all() {
        assert!(!path.exists());
    }
}

#[test]
fn show_reads_keys_of_other_implementations() {
    let cases = [
        (
            "go_libp2p_ed25519_client.key",
            "ed25519",
            "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq",
        ),
        (
            "go_libp2p_rsa2048.key",
            "rsa",
            "QmcJeseojbPW9hSejUM1sQ1a2QmbrryPK4Z8pWbRUPaYEn",
        ),
    ];
    for (name, kind, id) in cases {
        let out = keygen()
            .arg("show")
            .arg(fixture(name))
            .arg("--json")
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["key_type"], kind);
        assert_eq!(json["peer_id"], id);
    }
    let expected = fs::read_to_string(fixture("hivemind_rsa.peer_id")).unwrap();
    assert_eq!(show_peer_id(&fixture("hivemind_rsa.key")), expected.trim());
}

#[test]
fn show_refuses_what_is_not_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.key");
    fs::write(&garbage, b"definitely not a key\n").unwrap();
    let assert = keygen().arg("show").arg(&garbage).assert().failure();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        err.contains("garbage.key") && err.contains("not a libp2p private key"),
        "{err}"
    );
    assert!(assert.get_output().stdout.is_empty());

    let empty = dir.path().join("empty.key");
    fs::write(&empty, b"").unwrap();
    let assert = keygen().arg("show").arg(&empty).assert().failure();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(err.contains("empty"), "{err}");

    let assert = keygen()
        .arg("show")
        .arg(dir.path().join("missing.key"))
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(err.contains("missing.key"), "{err}");
}

#[test]
fn help_explains_the_three_keys() {
    let out = keygen()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(out).unwrap();
    for needle in [
        "--bootstrap_path",
        "--client_path",
        "--key_type",
        "--force",
        "bootnode",
        "client-mode",
        "show",
    ] {
        assert!(help.contains(needle), "--help mentions {needle}:\n{help}");
    }
}

#[test]
fn show_conflicts_with_generation_flags() {
    let paths = Paths::new();
    paths
        .keygen()
        .arg("show")
        .arg(fixture("go_libp2p_rsa2048.key"))
        .assert()
        .failure();
    for path in paths.all() {
        assert!(!path.exists());
    }
}

#[test]
fn one_file_for_two_keys_is_refused() {
    let paths = Paths::new();
    let assert = keygen()
        .arg("--path")
        .arg(paths.main())
        .arg("--bootstrap_path")
        .arg(paths.bootnode())
        .arg("--client_path")
        .arg(paths.main())
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(err.contains("also used for another key"), "{err}");
    assert!(!paths.main().exists() && !paths.bootnode().exists());
}
