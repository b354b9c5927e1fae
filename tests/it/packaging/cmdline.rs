//! The drctl command lines of the manifests (container commands and args, PostgreSQL's
//! archive_command and restore_command), parsed exactly as the drctl binary parses them.

use std::collections::{BTreeMap, BTreeSet};

use clap::{CommandFactory, Parser};

use drctl::cli::Cli;

use super::manifests::{Pod, drctl_argv, is_drctl_image};

/// The PostgreSQL settings whose value is a shell command PostgreSQL runs.
const PG_COMMAND_SETTINGS: &[&str] =
    &["archive_command", "restore_command", "archive_cleanup_command", "recovery_end_command"];

/// What PostgreSQL substitutes in those commands, with sample values.
const PG_PLACEHOLDERS: &[(&str, &str)] = &[
    ("%p", "pg_wal/000000010000000000000002"),
    ("%f", "000000010000000000000002"),
    ("%r", "000000010000000000000001"),
    ("%%", "%"),
];

/// One drctl command line found in a manifest.
pub struct Invocation {
    pub origin: String,
    pub pod: usize,
    pub container: usize,
    /// drctl's arguments, without the program.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// The value of a `-c name=value` (or `--name=value`) server option, for the settings named.
pub fn postgres_settings(words: &[String]) -> Vec<(String, String)> {
    let mut settings = Vec::new();
    let mut words = words.iter().peekable();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next().cloned()
        } else if let Some(rest) = word.strip_prefix("-c") {
            Some(rest.to_string())
        } else {
            word.strip_prefix("--").filter(|w| w.contains('=')).map(str::to_string)
        };
        if let Some((name, value)) = setting.as_deref().and_then(|s| s.split_once('='))
            && PG_COMMAND_SETTINGS.contains(&name.trim())
        {
            let value = value.trim();
            let value = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(value);
            settings.push((name.trim().to_string(), value.to_string()));
        }
    }
    settings
}

/// Splits a shell command into words: whitespace, with single and double quotes.
pub fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quotes in {command:?}");
    if in_word {
        words.push(word);
    }
    words
}

fn invocations(pods: &[Pod]) -> Vec<Invocation> {
    let mut found = Vec::new();
    for (p, pod) in pods.iter().enumerate() {
        for (c, container) in pod.containers.iter().enumerate() {
            let env = container.env_strings();
            let origin = format!("{}, container {}", pod.at, container.name);
            let own = match &container.command {
                Some(command) => drctl_argv(&[command.clone(), container.args.clone()].concat()),
                // The drctl image's entrypoint is `tini -- drctl`: args are drctl's arguments.
                None if is_drctl_image(&container.image) && !container.args.is_empty() => Some(container.args.clone()),
                None => None,
            };
            if let Some(argv) = own {
                found.push(Invocation { origin: origin.clone(), pod: p, container: c, argv, env: env.clone() });
            }
            let words = [container.command.clone().unwrap_or_default(), container.args.clone()].concat();
            for (setting, value) in postgres_settings(&words) {
                let value = PG_PLACEHOLDERS.iter().fold(value, |v, (from, to)| v.replace(from, to));
                if let Some(argv) = drctl_argv(&shell_words(&value)) {
                    found.push(Invocation {
                        origin: format!("{origin}, {setting}"),
                        pod: p,
                        container: c,
                        argv,
                        env: env.clone(),
                    });
                }
            }
        }
    }
    found
}

/// The (sub)commands `argv` runs through, from the top: `[drctl, backup]`, `[drctl, key, add]`.
fn command_chain(argv: &[String]) -> Vec<clap::Command> {
    let mut chain = vec![Cli::command()];
    for word in argv.iter().filter(|w| !w.starts_with('-')) {
        let Some(sub) = chain.last().and_then(|c| c.find_subcommand(word)).cloned() else { break };
        chain.push(sub);
    }
    chain
}

/// The flags the container's environment gives drctl (`DRCTL_REPO` as `--repo=…`), for the
/// arguments of these (sub)commands that read an environment variable and are not on the command
/// line already; the test process's own environment stays out of it.
fn env_flags(chain: &[clap::Command], argv: &[String], env: &BTreeMap<String, String>) -> Vec<String> {
    let mut flags = Vec::new();
    let mut seen = BTreeSet::new();
    for command in chain {
        for arg in command.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
            let Some(value) = env.get(&*var.to_string_lossy()) else { continue };
            let given = argv.iter().any(|a| *a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
            if given || !seen.insert(long.to_string()) {
                continue;
            }
            if arg.get_action().takes_values() {
                flags.push(format!("--{long}={value}"));
            } else if ["true", "1", "yes", "on"].contains(&value.to_ascii_lowercase().as_str()) {
                flags.push(format!("--{long}"));
            }
        }
    }
    flags
}

/// A parsed drctl command line: its subcommand names and the values of its flags by long name.
pub struct Parsed {
    subcommands: Vec<String>,
    values: BTreeMap<String, Vec<String>>,
}

impl Parsed {
    pub fn name(&self) -> String {
        self.subcommands.join(" ")
    }

    pub fn values(&self, long: &str) -> &[String] {
        self.values.get(long).map_or(&[], Vec::as_slice)
    }

    pub fn value(&self, long: &str) -> Option<&str> {
        self.values(long).first().map(String::as_str)
    }

    pub fn has(&self, long: &str) -> bool {
        self.values.contains_key(long)
    }
}

/// Parses `argv` exactly as the drctl binary does (with `env` as its environment).
pub fn parse_cli(argv: &[String], env: &BTreeMap<String, String>) -> Result<Parsed, String> {
    let chain = command_chain(argv);
    let mut full = vec!["drctl".to_string()];
    full.extend(argv.iter().cloned());
    full.extend(env_flags(&chain, argv, env));
    Cli::try_parse_from(&full).map_err(|e| format!("{}\n(parsed: {full:?})", e.render()))?;
    let matches = Cli::command().try_get_matches_from(&full).map_err(|e| e.render().to_string())?;
    let mut subcommands = Vec::new();
    let mut values = BTreeMap::new();
    let mut level = (chain[0].clone(), &matches);
    loop {
        let (command, m) = level;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if m.value_source(arg.get_id().as_str()) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            let raw: Vec<String> = m
                .get_raw(arg.get_id().as_str())
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            values.entry(long.to_string()).or_insert_with(Vec::new).extend(raw);
        }
        let Some((name, sub)) = m.subcommand() else { break };
        subcommands.push(name.to_string());
        let sub_command = command.find_subcommand(name).expect("a subcommand of the parsed command").clone();
        level = (sub_command, sub);
    }
    Ok(Parsed { subcommands, values })
}

/// Every environment variable drctl's CLI reads, in any (sub)command.
pub fn cli_env_vars() -> BTreeSet<String> {
    fn walk(command: &clap::Command, vars: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(var) = arg.get_env() {
                vars.insert(var.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, vars);
        }
    }
    let mut vars = BTreeSet::new();
    walk(&Cli::command(), &mut vars);
    vars
}

/// Every drctl command line, parsed; panics with every one that does not parse.
pub fn parsed_invocations(pods: &[Pod]) -> (Vec<Invocation>, Vec<Parsed>) {
    let found = invocations(pods);
    let mut parsed = Vec::new();
    let mut failures = Vec::new();
    for inv in &found {
        match parse_cli(&inv.argv, &inv.env) {
            Ok(p) => parsed.push(p),
            Err(e) => failures.push(format!("{}: `drctl {}`:\n{e}", inv.origin, inv.argv.join(" "))),
        }
    }
    assert!(failures.is_empty(), "drctl command lines in k8s/ that drctl's CLI refuses:\n\n{}", failures.join("\n\n"));
    (found, parsed)
}
