use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::{GlobalArgs, RepoArgs};
use crate::repo::crypto::Id;
use crate::repo::key::{self, Secret, SlotKind};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key slots.
    List(ListArgs),
    /// Add a key slot: a new passphrase (DRCTL_NEW_PASSWORD or a prompt), or a new key file.
    Add(AddArgs),
    /// Remove a key slot (never the last one).
    Remove(RemoveArgs),
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
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
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
            let repo = args.repo.open()?;
            let secret = match &args.new_key_file {
                Some(path) => Secret::create_key_file(path)
                    .with_context(|| format!("cannot create the key file {}", path.display()))
                    .map_err(|e| {
                        e.context(crate::repo::Error::InvalidRequest("the key file was not created".into()))
                    })?,
                None => Secret::Passphrase(new_passphrase()?.into_bytes()),
            };
            let id = key::add_slot(repo.store(), repo.key(), &secret)?;
            if !global.quiet {
                println!("added key slot {}", id.short());
            }
            Ok(())
        }
        KeyCommand::Remove(args) => {
            let repo = args.repo.open()?;
            let query = args.id.to_ascii_lowercase();
            let matches: Vec<Id> = key::list(repo.store())?
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| id.to_hex().starts_with(&query))
                .collect();
            let [id] = matches.as_slice() else {
                anyhow::bail!(crate::repo::Error::InvalidRequest(format!(
                    "{} key slots match {:?}; see `drctl key list`",
                    matches.len(),
                    args.id
                )));
            };
            key::remove(repo.store(), *id)?;
            if !global.quiet {
                println!("removed key slot {}", id.short());
            }
            Ok(())
        }
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let repo = args.repo.open()?;
    let slots = key::list(repo.store())?;
    if args.json {
        let list: Vec<_> = slots
            .iter()
            .map(|(id, s)| {
                serde_json::json!({"id": id.to_hex(), "kind": s.kind, "created": s.created,
                    "hostname": s.hostname, "current": *id == repo.slot()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("   {:<8}  {:<10}  {:<20}  host", "id", "kind", "created (UTC)");
    for (id, s) in &slots {
        let kind = match s.kind {
            SlotKind::Passphrase => "passphrase",
            SlotKind::KeyFile => "key-file",
        };
        let current = if *id == repo.slot() { "*" } else { " " };
        println!(
            "{current}  {:<8}  {kind:<10}  {:<20}  {}",
            id.short(),
            s.created.format("%Y-%m-%d %H:%M:%S"),
            s.hostname
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
        anyhow::bail!(crate::repo::Error::InvalidRequest(
            "set DRCTL_NEW_PASSWORD to the new passphrase, or run on a terminal to be asked".into()
        ));
    }
    let first = rpassword::prompt_password("new passphrase: ")?;
    if rpassword::prompt_password("repeat new passphrase: ")? != first {
        anyhow::bail!(crate::repo::Error::InvalidRequest("the two passphrases differ".into()));
    }
    Ok(first)
}
