use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::{GlobalArgs, RepoArgs};
use crate::repo::key::{Secret, SlotKind};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key slots.
    List(ListArgs),
    /// Add a key slot: a new passphrase (DRCTL_NEW_PASSWORD or a prompt), or a new key file.
    Add(AddArgs),
    /// Remove a key slot (never the last one).
    Remove(RemoveArgs),
    /// Replace the slot this command opens the repository with by a new one (a new passphrase,
    /// key file or KMS key): the master key is re-wrapped, no data is rewritten.
    Rotate(AddArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Create this key file (mode 0600; it must not exist) and a slot it opens.
    #[arg(long, value_name = "FILE", conflicts_with = "kms_key_id")]
    pub new_key_file: Option<PathBuf>,
    /// A slot that AWS KMS opens with this key (ARN, key id or alias/NAME).
    #[arg(long, value_name = "ARN")]
    pub kms_key_id: Option<String>,
}

impl AddArgs {
    /// The new slot's secret: a new key file, a KMS key, or a new passphrase.
    fn new_secret(&self) -> anyhow::Result<Secret> {
        if let Some(key) = &self.kms_key_id {
            return Ok(crate::ops::unlock::kms_secret(Some(key.clone())));
        }
        match &self.new_key_file {
            Some(path) => Ok(Secret::create_key_file(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    anyhow::Error::new(crate::repo::Error::KeyFileExists { path: path.clone() })
                }
                _ => anyhow::Error::new(e)
                    .context(format!("cannot create the key file {}", path.display()))
                    .context(crate::ops::Error::Usage("the key file was not created".into())),
            })?),
            None => Ok(Secret::Passphrase(new_passphrase()?.into_bytes())),
        }
    }
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The slot id, or a unique prefix of it (see `drctl key list`).
    pub id: String,
}

pub fn run(command: KeyCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match command {
        KeyCommand::List(args) => list(args),
        KeyCommand::Add(args) => {
            let id = args.repo.open()?.add_key_slot(&args.new_secret()?)?;
            if !global.quiet {
                println!("added key slot {}", id.short());
            }
            Ok(())
        }
        KeyCommand::Rotate(args) => {
            let (repo, old) = args.repo.open_with_secret()?;
            let id = repo.rotate_key_slot(&old, &args.new_secret()?)?;
            if !global.quiet {
                println!("rotated: key slot {} replaced by {}", repo.slot().short(), id.short());
            }
            Ok(())
        }
        KeyCommand::Remove(args) => {
            let id = args.repo.open()?.remove_key_slot(&args.id)?;
            if !global.quiet {
                println!("removed key slot {}", id.short());
            }
            Ok(())
        }
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let slots = repo.key_slots()?;
    if args.json {
        let list: Vec<_> = slots
            .iter()
            .map(|(id, s)| {
                serde_json::json!({"id": id.to_hex(), "kind": s.kind, "created": s.created,
                    "hostname": s.hostname, "kms_key_id": s.kms_key_id, "current": *id == repo.slot()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("   {:<8}  {:<10}  {:<20}  host (KMS key)", "id", "kind", "created (UTC)");
    for (id, s) in &slots {
        let kind = match s.kind {
            SlotKind::Passphrase => "passphrase",
            SlotKind::KeyFile => "key-file",
            SlotKind::Kms => "kms",
        };
        let current = if *id == repo.slot() { "*" } else { " " };
        println!(
            "{current}  {:<8}  {kind:<10}  {:<20}  {}{}",
            id.short(),
            s.created.format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.kms_key_id.as_deref().map(|k| format!(" ({k})")).unwrap_or_default()
        );
    }
    Ok(())
}

/// The new passphrase from DRCTL_NEW_PASSWORD, or asked twice on a terminal.
fn new_passphrase() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if let Ok(p) = std::env::var("DRCTL_NEW_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stderr().is_terminal() {
        anyhow::bail!(crate::ops::Error::Usage(
            "set DRCTL_NEW_PASSWORD to the new passphrase, or run on a terminal to be asked".into()
        ));
    }
    Ok(super::access::ask("new passphrase: ", Some("repeat new passphrase: "))?)
}
