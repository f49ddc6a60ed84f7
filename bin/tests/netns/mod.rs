//! Network namespaces for tests: commands, the check that they can be made
//! here, and a set of namespaces and processes deleted on drop. The hosts'
//! addresses exist only inside the namespaces a test creates.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub(crate) fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("{args:?}: {e}");
        })
}

pub(crate) fn ok(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `args` inside namespace `ns`.
pub(crate) fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    ok(&all);
}

/// Loads an nftables ruleset into namespace `ns`.
pub(crate) fn nft(ns: &str, rules: &str) {
    let file = std::env::temp_dir().join(format!("{ns}-{}.nft", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    in_ns(ns, &["nft", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(file);
}

/// The packets counted by the first `counter` in table `table` of `ns`.
pub(crate) fn counted(ns: &str, table: &str) -> u64 {
    let out = sh(&[
        "ip", "netns", "exec", ns, "nft", "list", "table", "inet", table,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The namespaces of one run and the processes in them; killed and deleted
/// on drop.
#[derive(Default)]
pub(crate) struct Net {
    pub(crate) names: Vec<String>,
    pub(crate) daemons: Vec<Child>,
}

impl Net {
    /// Adds a namespace with loopback up.
    pub(crate) fn add(&mut self, name: &str) {
        ok(&["ip", "netns", "add", name]);
        self.names.push(name.to_string());
        ok(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// A veth pair from `a` (named `a_if`) to `b` (named `b_if`), both up.
    pub(crate) fn link(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        ok(&[
            "ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ]);
        ok(&["ip", "-n", a, "link", "set", a_if, "up"]);
        ok(&["ip", "-n", b, "link", "set", b_if, "up"]);
    }

    /// Adds namespace `name` holding a bridge `br0`: "the internet".
    pub(crate) fn bridge(&mut self, name: &str) {
        self.add(name);
        ok(&["ip", "-n", name, "link", "add", "br0", "type", "bridge"]);
        ok(&["ip", "-n", name, "link", "set", "br0", "up"]);
    }

    /// Plugs namespace `ns` into the bridge in `bridge` (a veth: `wan` in
    /// `ns`, `port` on the bridge) with address `ip`/24 on `wan`.
    pub(crate) fn attach(&self, bridge: &str, ns: &str, port: &str, ip: &str) {
        self.link(ns, "wan", bridge, port);
        ok(&["ip", "-n", bridge, "link", "set", port, "master", "br0"]);
        let cidr = format!("{ip}/24");
        ok(&["ip", "-n", ns, "addr", "add", &cidr, "dev", "wan"]);
    }
}

/// Waits for a file [`put`] writes and returns its text.
pub(crate) fn wait_file(path: &Path, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return Some(text);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Writes a file whole (the reader waits for the final newline).
pub(crate) fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n")).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// The last 40 lines of `<dir>/<name>.log` of each of `names`, headed.
pub(crate) fn logs(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            format!(
                "\n--- {name}.log (last lines) ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect()
}

impl Drop for Net {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        // Whatever those started (a chain node, say) goes too.
        for n in &self.names {
            let pids = sh(&["ip", "netns", "pids", n]);
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // SAFETY: a signal to a process in a namespace this test made.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for n in &self.names {
            let _ = sh(&["ip", "netns", "del", n]);
        }
    }
}

/// Why namespaces cannot be made here, if they cannot.
pub(crate) fn unavailable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for tool in ["ip", "nft"] {
        match Command::new(tool).arg("-V").output() {
            Ok(_) => {}
            Err(e) => return Some(format!("`{tool}` is not installed ({e})")),
        }
    }
    let probe = format!("mlprobe{}", std::process::id());
    let out = sh(&["ip", "netns", "add", &probe]);
    if !out.status.success() {
        return Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = sh(&["ip", "netns", "del", &probe]);
    None
}
