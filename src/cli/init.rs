use clap::Args;

use super::{GlobalArgs, RepoArgs};
use crate::repo::{InitOptions, Repository};

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Default zstd level for backups (1-19; 3 balances speed and size).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// Target size of pack files in MiB.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub pack_size_mib: u64,
    /// Wrap the master key with this AWS KMS key (ARN, key id or alias/NAME) instead of a
    /// passphrase: whoever may kms:Decrypt with it opens the repository.
    #[arg(long, value_name = "ARN")]
    pub kms_key_id: Option<String>,
}

pub fn run(args: InitArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = args.repo.store()?;
    let secret = match &args.kms_key_id {
        Some(key) => crate::ops::unlock::kms_secret(Some(key.clone())),
        None => args.repo.secret(true)?,
    };
    let options = InitOptions {
        compression_level: args.compression_level,
        pack_size: args.pack_size_mib << 20,
        ..InitOptions::default()
    };
    let repo = Repository::init(store, &secret, &options)?;
    if !global.quiet {
        println!("created drctl repository {} at {}", &repo.config().id[..8], args.repo.repo);
    }
    Ok(())
}
