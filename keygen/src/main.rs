//! `keygen`: generates and inspects mesh peer key files.
//!
//! A mesh deployment uses three keys, generated together (flags as the
//! Python Hypertensor mesh's `keygen`):
//!
//! - the **main** key (`--path`, default `private_key.key`): the node's
//!   identity on the DHT and its RPC — its PeerId is what the subnet
//!   registers;
//! - the **bootnode** key (`--bootstrap_path`, default
//!   `bootstrap_private_key.key`): the identity of a `mesh-dht` bootnode;
//! - the **client** key (`--client_path`, default `client_private_key.key`):
//!   a client-mode node, which uses the DHT but does not serve.
//!
//! Key files are libp2p's protobuf `PrivateKey` encoding (Ed25519 by
//! default, or RSA-2048 with `--key_type rsa`), written with mode `0600`.
//! Existing files are never overwritten without `--force`, and all three
//! paths are checked before anything is written.
//!
//! `keygen show PATH` prints the key type and PeerId of an existing key file.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use mesh_core::{KeyType, PeerKey};
use serde_json::json;

/// Generate the main, bootnode and client keys of a mesh node, or show a key.
///
/// Generates three keys and prints their PeerIds:
///
///   main      (--path)            the node's identity on the DHT and its RPC;
///                                 its PeerId is the one the subnet registers.
///   bootnode  (--bootstrap_path)  the identity of a `mesh-dht` bootnode, which
///                                 other nodes dial to join the DHT.
///   client    (--client_path)     a client-mode node, which reads and writes
///                                 the DHT but does not serve.
///
/// Key files are libp2p's protobuf PrivateKey encoding (as go-libp2p and the
/// Python Hypertensor mesh write them), created with mode 0600. Nothing is
/// overwritten without --force: if any of the three files exists, none is
/// written.
#[derive(Debug, Parser)]
#[command(
    name = "keygen",
    version,
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    generate: GenerateArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Where to write the main key: the node's identity on the DHT and RPC.
    #[arg(long = "path", value_name = "PATH", default_value = "private_key.key")]
    path: PathBuf,

    /// Where to write the bootnode key: the identity of a `mesh-dht` bootnode.
    #[arg(
        long = "bootstrap_path",
        visible_alias = "bootstrap-path",
        value_name = "PATH",
        default_value = "bootstrap_private_key.key"
    )]
    bootstrap_path: PathBuf,

    /// Where to write the client key: a client-mode node that does not serve.
    #[arg(
        long = "client_path",
        visible_alias = "client-path",
        value_name = "PATH",
        default_value = "client_private_key.key"
    )]
    client_path: PathBuf,

    /// Key type: ed25519 (default; `12D3KooW…` PeerIds) or rsa (2048 bits;
    /// `Qm…` PeerIds).
    #[arg(
        long = "key_type",
        visible_alias = "key-type",
        value_name = "TYPE",
        default_value = "ed25519",
        value_parser = parse_key_type
    )]
    key_type: KeyType,

    /// Overwrite existing key files. The old keys, and the PeerIds they
    /// gave, are lost.
    #[arg(long)]
    force: bool,

    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the key type and PeerId of an existing key file.
    Show {
        /// The key file.
        path: PathBuf,

        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    s.parse::<KeyType>()
        .map_err(|_| format!("unknown key type {s:?}; use ed25519 or rsa"))
}

/// One of the three keys `keygen` writes.
struct Role {
    name: &'static str,
    path: PathBuf,
}

fn generate(args: GenerateArgs) -> Result<()> {
    let roles = [
        Role {
            name: "main",
            path: args.path,
        },
        Role {
            name: "bootnode",
            path: args.bootstrap_path,
        },
        Role {
            name: "client",
            path: args.client_path,
        },
    ];

    // Everything is checked before anything is written.
    let mut seen = HashSet::new();
    for role in &roles {
        if !seen.insert(role.path.clone()) {
            bail!(
                "the {} key path {} is also used for another key; give each key its own file",
                role.name,
                role.path.display()
            );
        }
        let dir = match role.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            bail!(
                "cannot write the {} key to {}: {} is not a directory",
                role.name,
                role.path.display(),
                dir.display()
            );
        }
        if role.path.is_dir() {
            bail!(
                "cannot write the {} key to {}: it is a directory",
                role.name,
                role.path.display()
            );
        }
    }
    if !args.force {
        let existing: Vec<String> = roles
            .iter()
            .filter(|role| role.path.symlink_metadata().is_ok())
            .map(|role| format!("{} ({})", role.path.display(), role.name))
            .collect();
        if !existing.is_empty() {
            bail!(
                "refusing to overwrite existing key file(s): {}; nothing was written. \
                 Use --force to replace them (their PeerIds will be lost)",
                existing.join(", ")
            );
        }
    }

    let keys = roles
        .iter()
        .map(|role| {
            PeerKey::generate(args.key_type)
                .with_context(|| format!("generating the {} key", role.name))
        })
        .collect::<Result<Vec<_>>>()?;

    let mut written: Vec<&Path> = Vec::new();
    for (role, key) in roles.iter().zip(&keys) {
        if let Err(err) = key.write_file(&role.path, args.force) {
            // Without --force, take back the files written by this run, so that
            // no half set is left behind.
            if !args.force {
                for path in &written {
                    let _ = fs::remove_file(path);
                }
            }
            return Err(err).with_context(|| format!("writing the {} key", role.name));
        }
        written.push(&role.path);
    }

    if args.json {
        let mut out = serde_json::Map::new();
        out.insert("key_type".into(), json!(args.key_type.to_string()));
        for (role, key) in roles.iter().zip(&keys) {
            out.insert(
                role.name.into(),
                json!({ "path": role.path.display().to_string(), "peer_id": key.peer_id().to_base58() }),
            );
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let width = roles
            .iter()
            .map(|r| r.path.display().to_string().len())
            .max()
            .unwrap_or(0);
        println!("Generated three {} keys (mode 0600):", args.key_type);
        for (role, key) in roles.iter().zip(&keys) {
            println!(
                "{:<9} {:<width$}  {}",
                role.name,
                role.path.display().to_string(),
                key.peer_id()
            );
        }
    }
    Ok(())
}

fn show(path: &Path, json_output: bool) -> Result<()> {
    // The error names the file already.
    let key = PeerKey::read_file(path)?;
    warn_if_readable_by_others(path);
    if json_output {
        let out = json!({
            "path": path.display().to_string(),
            "key_type": key.key_type().to_string(),
            "peer_id": key.peer_id().to_base58(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("path      {}", path.display());
        println!("key type  {}", key.key_type());
        println!("peer id   {}", key.peer_id());
    }
    Ok(())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "warning: {} is accessible to other users (mode {mode:04o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Show { path, json }) => show(&path, json),
        None => generate(cli.generate),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keygen: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
