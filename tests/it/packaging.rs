//! Packaging: the Dockerfile, the Kubernetes manifests in k8s/ and the monitoring in monitoring/,
//! held to drctl itself, since neither Docker nor Kubernetes runs here.
//!
//! - every drctl command line of a manifest parses with drctl's own CLI, with the container's
//!   environment (a container of the drctl image: its `args`, under the `tini -- drctl`
//!   entrypoint; a `command` that runs drctl; PostgreSQL's archive_command and restore_command);
//! - every policy such a command names is a ConfigMap key that is byte for byte the file in
//!   policies/ and a valid policy, and the pod that runs it has what the policy needs (its
//!   password, the paths it backs up, the server's socket and data directory, AWS access), in
//!   exactly one place;
//! - CronJob schedules parse as drctl parses cron schedules, and run often enough for the policy;
//!   every `drctl schedule` passes `--every`, no longer than the RPO of the policies it runs;
//! - the Dockerfile builds the binary its entrypoint and the manifests use, as a non-root user;
//! - the alert rules and the dashboard use only metrics drctl exports (`promtool` checks and
//!   unit-tests the rules when it is installed).

use clap::{CommandFactory, Parser};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use drctl::cli::Cli;
use drctl::policy::{self, BaseMode, Connection, KeySlot, Password, Policy, Schedule, SourceKind};

use crate::harness::on_path;

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

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// YAML documents

/// One YAML document of a manifest file.
struct Doc {
    file: String,
    node: MarkedMappingNode,
}

impl Doc {
    fn kind(&self) -> &str {
        get_str(&self.node, &["kind"]).unwrap_or_default()
    }

    fn name(&self) -> &str {
        get_str(&self.node, &["metadata", "name"]).unwrap_or_default()
    }

    fn at(&self) -> String {
        format!("{}: {} {}", self.file, self.kind(), self.name())
    }
}

fn get<'a>(map: &'a MarkedMappingNode, path: &[&str]) -> Option<&'a Node> {
    let (last, parents) = path.split_last()?;
    let mut map = map;
    for key in parents {
        map = map.get_mapping(key)?;
    }
    map.get_node(last)
}

fn get_map<'a>(map: &'a MarkedMappingNode, path: &[&str]) -> Option<&'a MarkedMappingNode> {
    get(map, path)?.as_mapping()
}

fn get_str<'a>(map: &'a MarkedMappingNode, path: &[&str]) -> Option<&'a str> {
    get(map, path)?.as_scalar().map(|s| s.as_str())
}

/// The mappings of a sequence (none when the key is absent).
fn get_maps<'a>(map: &'a MarkedMappingNode, path: &[&str]) -> Vec<&'a MarkedMappingNode> {
    get(map, path)
        .and_then(Node::as_sequence)
        .map(|s| s.iter().filter_map(Node::as_mapping).collect())
        .unwrap_or_default()
}

/// The scalars of a sequence, or None when the key is absent.
fn get_strs(map: &MarkedMappingNode, path: &[&str]) -> Option<Vec<String>> {
    let seq = get(map, path)?.as_sequence()?;
    Some(seq.iter().map(|n| n.as_scalar().map(|s| s.as_str().to_string()).unwrap_or_default()).collect())
}

/// The documents of a multi-document YAML file, split on lines that are exactly `---`;
/// documents holding only comments are left out.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("one document at least");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

fn parse_yaml(file: &str, text: &str) -> MarkedMappingNode {
    // prevent_coercion: only plain scalars may be read as something other than text, which is
    // how the test tells a quoted "true" from a plain one.
    let options = LoaderOptions::default().error_on_duplicate_keys(true).prevent_coercion(true);
    let node = marked_yaml::parse_yaml_with_options(0, text, options).unwrap_or_else(|e| panic!("{file}: {e}"));
    node.as_mapping().unwrap_or_else(|| panic!("{file}: the document is not a mapping")).clone()
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("k8s"))
        .expect("k8s/ exists")
        .map(|e| e.expect("k8s/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn manifests() -> Vec<Doc> {
    let mut docs = Vec::new();
    for path in manifest_files() {
        let file = format!("k8s/{}", path.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(&path).unwrap();
        // The YAML reader reads one document: a separator this test does not split on would hide
        // every document after it.
        let stray = text.lines().find(|l| (l.starts_with("---") || l.starts_with("...")) && *l != "---");
        assert!(stray.is_none(), "{file}: {stray:?}: separate documents with lines that are exactly `---`");
        for (i, doc) in split_documents(&text).iter().enumerate() {
            let file = format!("{file} (document {})", i + 1);
            docs.push(Doc { node: parse_yaml(&file, doc), file });
        }
    }
    docs
}

/// Whether YAML 1.1 (what Kubernetes' YAML reader follows) reads this plain scalar as something
/// other than a string: a boolean, null, or a number.
fn yaml11_not_a_string(s: &str) -> bool {
    const WORDS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", ""];
    let digits = s.trim_start_matches(['-', '+']);
    WORDS.contains(&s.to_ascii_lowercase().as_str())
        || s.parse::<f64>().is_ok()
        || digits.starts_with("0x")
        || digits.starts_with("0o")
        || (digits.contains(':') && digits.split(':').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
}

// ---------------------------------------------------------------------------------------------
// Pods, containers, volumes

#[derive(Debug, Clone, PartialEq)]
enum EnvValue {
    Value(String),
    SecretKey { secret: String, key: String },
    Other,
}

#[derive(Debug, Clone)]
struct Mount {
    volume: String,
    path: String,
    read_only: bool,
}

#[derive(Debug, Clone)]
enum Volume {
    ConfigMap { name: String, items: Option<Vec<(String, String)>> },
    Secret { name: String, items: Option<Vec<(String, String)>> },
    EmptyDir,
    Claim,
    Other,
}

struct Container {
    name: String,
    init: bool,
    image: String,
    command: Option<Vec<String>>,
    args: Vec<String>,
    env: BTreeMap<String, EnvValue>,
    mounts: Vec<Mount>,
    node: MarkedMappingNode,
}

impl Container {
    /// The environment as the process sees it: a value from a Secret stands in as a placeholder.
    fn env_strings(&self) -> BTreeMap<String, String> {
        let text = |v: &EnvValue| match v {
            EnvValue::Value(v) => v.clone(),
            _ => "<from a secret>".to_string(),
        };
        self.env.iter().map(|(k, v)| (k.clone(), text(v))).collect()
    }

    fn env_value(&self, name: &str) -> Option<&str> {
        match self.env.get(name) {
            Some(EnvValue::Value(v)) => Some(v),
            _ => None,
        }
    }

    /// The mount a path lies in (the deepest one).
    fn mount_of(&self, path: &str) -> Option<&Mount> {
        self.mounts
            .iter()
            .filter(|m| path == m.path || path.starts_with(&format!("{}/", m.path)))
            .max_by_key(|m| m.path.len())
    }

    fn runs_postgres(&self) -> bool {
        let repository = self.image.rsplit_once(':').map_or(self.image.as_str(), |(r, _)| r);
        repository == "postgres" || repository.ends_with("/postgres")
    }
}

fn is_drctl_image(image: &str) -> bool {
    let repository = image.rsplit_once(':').map_or(image, |(r, _)| r);
    repository.rsplit('/').next() == Some("drctl")
}

fn is_program(word: &str, name: &str) -> bool {
    word == name || word.ends_with(&format!("/{name}"))
}

/// drctl's arguments, when these words run drctl (directly or under tini).
fn drctl_argv(words: &[String]) -> Option<Vec<String>> {
    let mut words = words;
    if words.first().is_some_and(|w| is_program(w, "tini")) {
        words = &words[1..];
        if words.first().is_some_and(|w| w == "--") {
            words = &words[1..];
        }
    }
    let (program, args) = words.split_first()?;
    is_program(program, "drctl").then(|| args.to_vec())
}

/// A pod template: of a CronJob, Deployment, StatefulSet, DaemonSet or Job.
struct Pod {
    /// Index of the document in `manifests()`.
    doc: usize,
    at: String,
    file: String,
    kind: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    spec: MarkedMappingNode,
    containers: Vec<Container>,
    volumes: BTreeMap<String, Volume>,
}

impl Pod {
    fn service_account(&self) -> Option<&str> {
        get_str(&self.spec, &["serviceAccountName"])
    }
}

fn string_map(map: Option<&MarkedMappingNode>) -> BTreeMap<String, String> {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_scalar().map(|s| s.as_str().to_string()).unwrap_or_default()))
    })
    .into_iter()
    .flatten()
    .collect()
}

/// The scalar values of a mapping, each named `what KEY`.
fn scalar_values<'a>(map: Option<&'a MarkedMappingNode>, what: &str) -> Vec<(String, &'a MarkedScalarNode)> {
    let entries = map.into_iter().flat_map(|m| m.iter());
    entries.filter_map(|(k, v)| Some((format!("{what} {}", k.as_str()), v.as_scalar()?))).collect()
}

fn items(map: &MarkedMappingNode) -> Option<Vec<(String, String)>> {
    get(map, &["items"])?;
    Some(
        get_maps(map, &["items"])
            .iter()
            .map(|i| {
                (
                    get_str(i, &["key"]).unwrap_or_default().to_string(),
                    get_str(i, &["path"]).unwrap_or_default().to_string(),
                )
            })
            .collect(),
    )
}

fn pods(docs: &[Doc]) -> Vec<Pod> {
    let mut pods = Vec::new();
    for (index, doc) in docs.iter().enumerate() {
        let template = match doc.kind() {
            "CronJob" => get_map(&doc.node, &["spec", "jobTemplate", "spec", "template"]),
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => get_map(&doc.node, &["spec", "template"]),
            _ => continue,
        };
        let template = template.unwrap_or_else(|| panic!("{}: no pod template", doc.at()));
        let spec = get_map(template, &["spec"]).unwrap_or_else(|| panic!("{}: no pod spec", doc.at())).clone();
        let mut containers = Vec::new();
        for (key, init) in [("initContainers", true), ("containers", false)] {
            for c in get_maps(&spec, &[key]) {
                let env = get_maps(c, &["env"])
                    .iter()
                    .map(|e| {
                        let name = get_str(e, &["name"]).unwrap_or_default().to_string();
                        let value = match (get_str(e, &["value"]), get_map(e, &["valueFrom", "secretKeyRef"])) {
                            (Some(v), _) => EnvValue::Value(v.to_string()),
                            (None, Some(r)) => EnvValue::SecretKey {
                                secret: get_str(r, &["name"]).unwrap_or_default().to_string(),
                                key: get_str(r, &["key"]).unwrap_or_default().to_string(),
                            },
                            _ => EnvValue::Other,
                        };
                        (name, value)
                    })
                    .collect();
                let mounts = get_maps(c, &["volumeMounts"])
                    .iter()
                    .map(|m| Mount {
                        volume: get_str(m, &["name"]).unwrap_or_default().to_string(),
                        path: get_str(m, &["mountPath"]).unwrap_or_default().trim_end_matches('/').to_string(),
                        read_only: get_str(m, &["readOnly"]) == Some("true"),
                    })
                    .collect();
                containers.push(Container {
                    name: get_str(c, &["name"]).unwrap_or_default().to_string(),
                    init,
                    image: get_str(c, &["image"]).unwrap_or_default().to_string(),
                    command: get_strs(c, &["command"]),
                    args: get_strs(c, &["args"]).unwrap_or_default(),
                    env,
                    mounts,
                    node: c.clone(),
                });
            }
        }
        let mut volumes = BTreeMap::new();
        for v in get_maps(&spec, &["volumes"]) {
            let volume = if let Some(cm) = get_map(v, &["configMap"]) {
                Volume::ConfigMap { name: get_str(cm, &["name"]).unwrap_or_default().to_string(), items: items(cm) }
            } else if let Some(s) = get_map(v, &["secret"]) {
                Volume::Secret { name: get_str(s, &["secretName"]).unwrap_or_default().to_string(), items: items(s) }
            } else if get(v, &["emptyDir"]).is_some() {
                Volume::EmptyDir
            } else if get(v, &["persistentVolumeClaim"]).is_some() {
                Volume::Claim
            } else {
                Volume::Other
            };
            volumes.insert(get_str(v, &["name"]).unwrap_or_default().to_string(), volume);
        }
        for claim in get_maps(&doc.node, &["spec", "volumeClaimTemplates"]) {
            volumes.insert(get_str(claim, &["metadata", "name"]).unwrap_or_default().to_string(), Volume::Claim);
        }
        pods.push(Pod {
            doc: index,
            at: doc.at(),
            file: doc.file.split(' ').next().unwrap_or_default().to_string(),
            kind: doc.kind().to_string(),
            labels: string_map(get_map(template, &["metadata", "labels"])),
            annotations: string_map(get_map(template, &["metadata", "annotations"])),
            spec,
            containers,
            volumes,
        });
    }
    pods
}

/// A file a container sees through a ConfigMap or Secret volume.
#[derive(Debug, PartialEq)]
enum Mounted {
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
}

fn mounted_file(pod: &Pod, container: &Container, path: &str) -> Option<Mounted> {
    let mount = container.mount_of(path)?;
    let relative = path.strip_prefix(&format!("{}/", mount.path))?;
    let key_of = |items: &Option<Vec<(String, String)>>| match items {
        Some(items) => items.iter().find(|(_, p)| p == relative).map(|(k, _)| k.clone()),
        None => (!relative.contains('/')).then(|| relative.to_string()),
    };
    match pod.volumes.get(&mount.volume)? {
        Volume::ConfigMap { name, items } => Some(Mounted::ConfigMap { name: name.clone(), key: key_of(items)? }),
        Volume::Secret { name, items } => Some(Mounted::Secret { name: name.clone(), key: key_of(items)? }),
        _ => None,
    }
}

/// The keys of a ConfigMap or Secret document (data and stringData).
fn object_keys(docs: &[Doc], kind: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let doc = docs.iter().find(|d| d.kind() == kind && d.name() == name)?;
    let mut keys = string_map(get_map(&doc.node, &["data"]));
    keys.extend(string_map(get_map(&doc.node, &["stringData"])));
    Some(keys)
}

// ---------------------------------------------------------------------------------------------
// drctl command lines

/// One drctl command line found in a manifest.
struct Invocation {
    origin: String,
    pod: usize,
    container: usize,
    /// drctl's arguments, without the program.
    argv: Vec<String>,
    env: BTreeMap<String, String>,
}

/// The value of a `-c name=value` (or `--name=value`) server option, for the settings named.
fn postgres_settings(words: &[String]) -> Vec<(String, String)> {
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
fn shell_words(command: &str) -> Vec<String> {
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
struct Parsed {
    subcommands: Vec<String>,
    values: BTreeMap<String, Vec<String>>,
}

impl Parsed {
    fn name(&self) -> String {
        self.subcommands.join(" ")
    }

    fn values(&self, long: &str) -> &[String] {
        self.values.get(long).map_or(&[], Vec::as_slice)
    }

    fn value(&self, long: &str) -> Option<&str> {
        self.values(long).first().map(String::as_str)
    }

    fn has(&self, long: &str) -> bool {
        self.values.contains_key(long)
    }
}

/// Parses `argv` exactly as the drctl binary does (with `env` as its environment).
fn parse_cli(argv: &[String], env: &BTreeMap<String, String>) -> Result<Parsed, String> {
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
fn cli_env_vars() -> BTreeSet<String> {
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

// ---------------------------------------------------------------------------------------------
// Policies

fn shipped_policies() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.insert(
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    files
}

fn load_shipped(file: &str) -> Policy {
    policy::load(&root().join("policies").join(file)).unwrap_or_else(|invalid| panic!("policies/{file}:\n{invalid}"))
}

/// A policy run by a container: with `backup --policy FILE` or `schedule --policies DIR`.
struct Runner {
    invocation: usize,
    /// The file name in policies/ (= the ConfigMap key).
    file: String,
    /// `--source` names: none means every due source.
    sources: Vec<String>,
}

/// The ConfigMap keys a drctl policy argument names, through the container's mounts: a file
/// (`--policy`) or every file of a directory (`--policies`).
fn policy_keys(
    docs: &[Doc],
    pod: &Pod,
    container: &Container,
    path: &str,
    directory: bool,
) -> Result<Vec<Mounted>, String> {
    if !directory {
        return mounted_file(pod, container, path)
            .map(|m| vec![m])
            .ok_or_else(|| format!("{path} is not a file of a ConfigMap or Secret volume the container mounts"));
    }
    let path = path.trim_end_matches('/');
    let mount = container
        .mounts
        .iter()
        .find(|m| m.path == path)
        .ok_or_else(|| format!("{path} is not the mount point of a volume of the container"))?;
    match pod.volumes.get(&mount.volume) {
        Some(Volume::ConfigMap { name, items: Some(items) }) => {
            Ok(items.iter().map(|(key, _)| Mounted::ConfigMap { name: name.clone(), key: key.clone() }).collect())
        }
        Some(Volume::ConfigMap { name, items: None }) => {
            let keys = object_keys(docs, "ConfigMap", name).ok_or_else(|| format!("no ConfigMap {name} in k8s/"))?;
            Ok(keys.into_keys().map(|key| Mounted::ConfigMap { name: name.clone(), key }).collect())
        }
        other => Err(format!("{path} is not a ConfigMap volume: {other:?}")),
    }
}

/// What a container that runs `policy` must have; every problem found.
fn check_runner(docs: &[Doc], pod: &Pod, container: &Container, policy: &Policy, problems: &mut Vec<String>) {
    let mut problem = |what: String| {
        problems.push(format!("{}, container {}: policy {}: {what}", pod.at, container.name, policy.name))
    };
    let secret_has =
        |name: &str, key: &str| object_keys(docs, "Secret", name).is_some_and(|keys| keys.contains_key(key));
    // The database password.
    match &policy.database.password {
        Some(Password::Env(var)) => match container.env.get(var) {
            Some(EnvValue::SecretKey { secret, key }) if secret_has(secret, key) => {}
            Some(EnvValue::SecretKey { secret, key }) => {
                problem(format!("{var} comes from key {key} of Secret {secret}, which k8s/ does not define"))
            }
            _ => problem(format!("password_env {var} is not set from a Secret (env[].valueFrom.secretKeyRef)")),
        },
        Some(Password::File(path)) => match mounted_file(pod, container, &path.to_string_lossy()) {
            Some(Mounted::Secret { name, key }) if secret_has(&name, &key) => {}
            other => problem(format!(
                "password_file {} is not a key of a Secret of k8s/ mounted there: {other:?}",
                path.display()
            )),
        },
        None => {}
    }
    // A socket directory: shared with the server's container of the same pod.
    if let Connection::Parts { host, .. } = &policy.database.connection
        && host.starts_with('/')
    {
        let shared = container.mounts.iter().find(|m| m.path == host.trim_end_matches('/')).is_some_and(|m| {
            pod.containers
                .iter()
                .any(|c| c.runs_postgres() && c.mounts.iter().any(|s| s.volume == m.volume && s.path == m.path))
        });
        if !shared {
            problem(format!(
                "the server's socket directory {host} is not a volume shared with a postgres container of the pod"
            ));
        }
    }
    for source in &policy.sources {
        match &source.what {
            SourceKind::ConfigSnapshot { paths } => {
                for path in paths {
                    if container.mount_of(&path.to_string_lossy()).is_none() {
                        problem(format!("source {}: {} is not mounted", source.name, path.display()));
                    }
                }
            }
            SourceKind::BaseBackup(BaseMode::Local { pgdata }) => {
                let pgdata = pgdata.to_string_lossy();
                let server =
                    pod.containers.iter().find(|c| c.runs_postgres() && c.env_value("PGDATA") == Some(&pgdata));
                match (container.mount_of(&pgdata), server) {
                    (None, _) => problem(format!("source {}: the data directory {pgdata} is not mounted", source.name)),
                    (Some(_), None) => {
                        problem(format!("source {}: no postgres container of the pod has PGDATA={pgdata}", source.name))
                    }
                    (Some(mount), Some(server)) => {
                        if !mount.read_only {
                            problem(format!(
                                "source {}: {pgdata} should be mounted read-only (a backup only reads)",
                                source.name
                            ));
                        }
                        if server.mount_of(&pgdata).is_none_or(|m| m.volume != mount.volume || m.path != mount.path) {
                            problem(format!("source {}: {pgdata} is not the server's own data volume", source.name));
                        }
                    }
                }
            }
            SourceKind::BaseBackup(BaseMode::Stream) | SourceKind::LogicalDump { .. } => {}
        }
    }
    let repositories = std::iter::once(&policy.repositories.primary).chain(&policy.repositories.copies);
    for repository in repositories {
        match &repository.key {
            KeySlot::PasswordEnv(var) if !container.env.contains_key(var) => problem(format!("{var} is not set")),
            KeySlot::PasswordFile(path) | KeySlot::KeyFile(path)
                if container.mount_of(&path.to_string_lossy()).is_none() =>
            {
                problem(format!("{} is not mounted", path.display()))
            }
            _ => {}
        }
        if repository.location.starts_with("s3://") || matches!(repository.key, KeySlot::Kms(_)) {
            if container.env_value("AWS_REGION").is_none() {
                problem("AWS_REGION is not set (S3 and KMS need a default region)".into());
            }
            if !irsa_service_account(docs, pod) {
                problem(format!("the pod's service account {:?} has no IRSA role", pod.service_account()));
            }
        }
    }
}

/// Whether the pod runs as a ServiceAccount of k8s/ that has an IAM role (IRSA).
fn irsa_service_account(docs: &[Doc], pod: &Pod) -> bool {
    let Some(name) = pod.service_account() else { return false };
    docs.iter().any(|d| {
        d.kind() == "ServiceAccount"
            && d.name() == name
            && get_str(&d.node, &["metadata", "annotations", "eks.amazonaws.com/role-arn"])
                .is_some_and(|arn| arn.starts_with("arn:aws:iam::") && arn.contains(":role/"))
    })
}

/// Every drctl command line, parsed; panics with every one that does not parse.
fn parsed_invocations(pods: &[Pod]) -> (Vec<Invocation>, Vec<Parsed>) {
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

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests

#[test]
fn every_manifest_is_yaml_that_kubernetes_reads_as_meant() {
    let files = manifest_files();
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in [
        "serviceaccount.yaml",
        "policies-configmap.yaml",
        "secrets.yaml",
        "cronjob-rds-orders.yaml",
        "schedule-deployment.yaml",
        "postgres-statefulset.yaml",
    ] {
        assert!(names.iter().any(|n| n == expected), "k8s/{expected} is missing: {names:?}");
    }
    let docs = manifests();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for doc in &docs {
        for key in ["apiVersion", "kind"] {
            if get_str(&doc.node, &[key]).is_none_or(str::is_empty) {
                problems.push(format!("{}: no {key}", doc.file));
            }
        }
        let name = doc.name();
        let dns_label = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !dns_label {
            problems.push(format!("{}: metadata.name {name:?} is not a DNS label", doc.file));
        }
        if !seen.insert((doc.kind().to_string(), name.to_string())) {
            problems.push(format!("{}: a second {} named {name}", doc.file, doc.kind()));
        }
        if doc.kind() == "CronJob" && name.len() > 52 {
            problems.push(format!("{}: a CronJob name longer than 52 characters cannot create Jobs", doc.file));
        }
        // Label, annotation and environment values are strings: a plain `true` or `9187` would
        // reach the API server as a boolean or a number, which it refuses.
        let mut strings: Vec<(String, &MarkedScalarNode)> = Vec::new();
        let mut collect = |map, what| strings.extend(scalar_values(map, what));
        collect(get_map(&doc.node, &["metadata", "labels"]), "label");
        collect(get_map(&doc.node, &["metadata", "annotations"]), "annotation");
        for template in
            [&["spec", "template"][..], &["spec", "jobTemplate", "spec", "template"], &["spec", "jobTemplate"]]
        {
            if let Some(t) = get_map(&doc.node, template) {
                collect(get_map(t, &["metadata", "labels"]), "label");
                collect(get_map(t, &["metadata", "annotations"]), "annotation");
            }
        }
        if doc.kind() == "ConfigMap" || doc.kind() == "Secret" {
            collect(get_map(&doc.node, &["data"]), "data");
            collect(get_map(&doc.node, &["stringData"]), "stringData");
        }
        let mut containers: Vec<&MarkedMappingNode> = Vec::new();
        for pod in [&["spec", "template", "spec"][..], &["spec", "jobTemplate", "spec", "template", "spec"]] {
            if let Some(spec) = get_map(&doc.node, pod) {
                containers.extend(get_maps(spec, &["containers"]));
                containers.extend(get_maps(spec, &["initContainers"]));
            }
        }
        for c in containers {
            for e in get_maps(c, &["env"]) {
                if let Some(v) = e.get_scalar("value") {
                    strings.push((format!("env {}", get_str(e, &["name"]).unwrap_or_default()), v));
                }
            }
            for key in ["command", "args"] {
                for n in get(c, &[key]).and_then(Node::as_sequence).into_iter().flat_map(|s| s.iter()) {
                    match n.as_scalar() {
                        Some(s) => strings.push((format!("{key} item"), s)),
                        None => problems.push(format!("{}: a {key} item is not a string", doc.file)),
                    }
                }
            }
        }
        for (what, s) in strings {
            if s.may_coerce() && yaml11_not_a_string(s.as_str()) {
                problems.push(format!(
                    "{}: {what}: quote {:?}, or Kubernetes reads it as a non-string",
                    doc.file,
                    s.as_str()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // One drctl image, one version, everywhere.
    let images: BTreeSet<String> = pods(&docs)
        .iter()
        .flat_map(|p| p.containers.iter().map(|c| c.image.clone()))
        .filter(|i| is_drctl_image(i))
        .collect();
    assert_eq!(images.len(), 1, "every drctl container should run the same image: {images:?}");
    let image = images.first().unwrap();
    assert!(image.contains(':') && !image.ends_with(":latest"), "pin the drctl image's tag: {image}");
}

#[test]
fn every_drctl_command_line_in_the_manifests_parses_with_drctls_own_cli() {
    let docs = manifests();
    let pods = pods(&docs);
    let (found, parsed) = parsed_invocations(&pods);
    let listing: Vec<String> = found.iter().map(|i| format!("{}: drctl {}", i.origin, i.argv.join(" "))).collect();
    // The rds-orders CronJob, the scheduler Deployment, the api-db sidecar, archive_command and
    // restore_command: a test that found none would prove nothing.
    assert!(found.len() >= 5, "too few drctl command lines found:\n{}", listing.join("\n"));
    let commands: BTreeSet<String> = parsed.iter().map(Parsed::name).collect();
    for expected in ["backup", "schedule", "wal-push", "wal-fetch"] {
        assert!(
            commands.contains(expected),
            "no `drctl {expected}` in k8s/ (found {commands:?}):\n{}",
            listing.join("\n")
        );
    }
    for (inv, p) in found.iter().zip(&parsed) {
        let logs_json =
            inv.env.get("DRCTL_LOG_FORMAT").is_some_and(|f| f == "json") || p.value("log-format") == Some("json");
        assert!(logs_json, "{}: drctl should log JSON in a container (DRCTL_LOG_FORMAT=json)", inv.origin);
        if p.name() == "wal-push" {
            assert!(p.has("async"), "{}: archive through the async worker (--async)", inv.origin);
        }
    }

    // Every DRCTL_ variable a container sets is one drctl reads (a typo is silently ignored).
    let known = cli_env_vars();
    for pod in &pods {
        for c in &pod.containers {
            for var in c.env.keys().filter(|v| v.starts_with("DRCTL_")) {
                assert!(
                    known.contains(var),
                    "{}, container {}: drctl reads no {var} (it reads {known:?})",
                    pod.at,
                    c.name
                );
            }
        }
    }

    // Containers of the drctl image that do not run drctl: only the one that installs the binary.
    for pod in &pods {
        for (i, c) in pod.containers.iter().enumerate() {
            if is_drctl_image(&c.image) && !found.iter().any(|f| std::ptr::eq(&pods[f.pod], pod) && f.container == i) {
                assert!(c.init, "{}, container {}: runs the drctl image but not drctl", pod.at, c.name);
            }
        }
    }
}

#[test]
fn postgresql_archives_through_the_drctl_binary_its_pod_installs_into_its_own_repository() {
    let docs = manifests();
    let pods = pods(&docs);
    let (found, parsed) = parsed_invocations(&pods);
    let mut checked = 0;
    for (inv, p) in found.iter().zip(&parsed) {
        if !["wal-push", "wal-fetch"].contains(&p.name().as_str()) {
            continue;
        }
        checked += 1;
        let pod = &pods[inv.pod];
        let server = &pod.containers[inv.container];
        let words = [server.command.clone().unwrap_or_default(), server.args.clone()].concat();
        let settings = postgres_settings(&words);
        let program = settings
            .iter()
            .map(|(_, v)| shell_words(v)[0].clone())
            .find(|w| is_program(w, "drctl"))
            .expect("the setting runs drctl");
        assert!(program.starts_with('/'), "{}: PostgreSQL runs {program}: give an absolute path", inv.origin);
        // The binary lies in a volume that an init container of the drctl image fills with its own.
        let mount = server.mount_of(&program).unwrap_or_else(|| panic!("{}: {program} is in no volume", inv.origin));
        let dir = Path::new(&program).parent().unwrap().to_string_lossy().into_owned();
        assert_eq!(mount.path, dir, "{}: mount the binary's volume at {dir}", inv.origin);
        assert!(
            matches!(pod.volumes.get(&mount.volume), Some(Volume::EmptyDir)),
            "{}: {} is not an emptyDir",
            inv.origin,
            mount.volume
        );
        let installed = pod.containers.iter().any(|c| {
            let Some(target) = c.mounts.iter().find(|m| m.volume == mount.volume).map(|m| m.path.clone()) else {
                return false;
            };
            c.init
                && is_drctl_image(&c.image)
                && c.command.as_deref().is_some_and(|cmd| {
                    cmd.len() == 3
                        && is_program(&cmd[0], "cp")
                        && cmd[1] == image_binary()
                        && (cmd[2] == format!("{target}/drctl") || cmd[2] == format!("{target}/"))
                })
        });
        assert!(
            installed,
            "{}: no init container copies {} of the drctl image into {}",
            inv.origin,
            image_binary(),
            mount.volume
        );
        // WAL goes to the primary repository of the policy whose base backups read this server's
        // data directory, and PostgreSQL switches segments often enough for its RPO.
        let pgdata = server.env_value("PGDATA").unwrap_or_else(|| panic!("{}: PGDATA is not set", inv.origin));
        let policy = shipped_policies()
            .keys()
            .map(|f| load_shipped(f))
            .find(|policy| {
                policy.sources.iter().any(|s| matches!(&s.what, SourceKind::BaseBackup(BaseMode::Local { pgdata: d }) if d.to_string_lossy() == pgdata))
            })
            .unwrap_or_else(|| panic!("{}: no shipped policy backs up PGDATA {pgdata}", inv.origin));
        let repo = p.value("repo").or(inv.env.get("DRCTL_REPO").map(String::as_str));
        assert_eq!(
            repo,
            Some(policy.repositories.primary.location.as_str()),
            "{}: the WAL archive of {}",
            inv.origin,
            policy.name
        );
        assert_eq!(
            server.env_value("AWS_REGION"),
            policy.repositories.primary.region.as_deref(),
            "{}: AWS_REGION",
            inv.origin
        );
        assert!(irsa_service_account(&docs, pod), "{}: wal-push needs the IRSA role for S3 and KMS", inv.origin);
        let setting = |name: &str| {
            words.windows(2).find_map(|w| (w[0] == "-c").then(|| w[1].strip_prefix(&format!("{name}="))).flatten())
        };
        assert_eq!(setting("archive_mode"), Some("on"), "{}: archive_mode", inv.origin);
        let timeout: i64 = setting("archive_timeout").and_then(|t| t.parse().ok()).expect("archive_timeout in seconds");
        assert!(
            timeout > 0 && timeout <= policy.targets.rpo.num_seconds() / 2,
            "{}: archive_timeout {timeout}s against an RPO of {}s",
            inv.origin,
            policy.targets.rpo.num_seconds()
        );
    }
    assert!(checked >= 2, "no archive_command / restore_command through drctl in k8s/");
}

/// The path of drctl in its image: the Dockerfile's ENTRYPOINT's.
fn image_binary() -> String {
    let dockerfile = Dockerfile::read();
    let entrypoint = dockerfile.exec_form(dockerfile.last_stage(), "ENTRYPOINT").expect("an ENTRYPOINT");
    entrypoint.into_iter().find(|w| is_program(w, "drctl")).expect("the ENTRYPOINT runs drctl")
}

#[test]
fn cronjobs_run_on_schedules_drctl_parses_often_enough_for_their_policy() {
    let docs = manifests();
    let pods = pods(&docs);
    let (found, parsed) = parsed_invocations(&pods);
    let mut cronjobs = 0;
    for pod in pods.iter().filter(|p| p.kind == "CronJob") {
        cronjobs += 1;
        let doc = &docs[pod.doc];
        let spec =
            |path: &[&str]| get_str(&doc.node, path).unwrap_or_else(|| panic!("{}: no {}", pod.at, path.join(".")));
        let text = spec(&["spec", "schedule"]);
        let schedule = Schedule::parse(text)
            .unwrap_or_else(|e| panic!("{}: schedule {text:?}: {}\n  hint: {}", pod.at, e.message, e.hint));
        assert!(
            ["Etc/UTC", "UTC"].contains(&spec(&["spec", "timeZone"])),
            "{}: policies' schedules are in UTC",
            pod.at
        );
        assert_eq!(spec(&["spec", "concurrencyPolicy"]), "Forbid", "{}: two jobs of a policy at once", pod.at);
        for key in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
            assert!(spec(&["spec", key]).parse::<u32>().is_ok(), "{}: {key}", pod.at);
        }
        assert_eq!(
            spec(&["spec", "jobTemplate", "spec", "backoffLimit"]),
            "0",
            "{}: drctl's exit code is the signal",
            pod.at
        );
        assert_eq!(get_str(&pod.spec, &["restartPolicy"]), Some("Never"), "{}: restartPolicy", pod.at);
        // The interval bounds how late a due source starts: at most the policy's RPO and the
        // shortest gap of its schedules.
        let gap = schedule.longest_gap();
        for (inv, p) in found.iter().zip(&parsed).filter(|(i, _)| std::ptr::eq(&pods[i.pod], pod)) {
            // A policy's job does everything the policy asks, copies (WAL included) too: a CronJob
            // runs nothing else.
            let policy = match p.name().as_str() {
                "backup" => {
                    let file = p.value("policy").expect("CronJobs run policies");
                    load_shipped(Path::new(file).file_name().unwrap().to_str().unwrap())
                }
                other => panic!("{}: a CronJob runs `drctl {other}`, not a policy's job", inv.origin),
            };
            let mut bounds = vec![("the RPO".to_string(), policy.targets.rpo)];
            bounds.extend(policy.sources.iter().map(|s| (format!("source {}", s.name), s.schedule.longest_gap())));
            bounds.extend(
                policy.rds.iter().map(|r| ("the RDS snapshot schedule".to_string(), r.snapshot_schedule.longest_gap())),
            );
            for (what, bound) in bounds {
                assert!(
                    gap <= bound,
                    "{}: runs every {gap} at most, longer than {what} of {} ({bound})",
                    pod.at,
                    policy.name
                );
            }
            assert!(
                inv.env.contains_key("DRCTL_PUSHGATEWAY") || p.has("pushgateway") || p.has("metrics-file"),
                "{}: a CronJob's metrics must go somewhere (DRCTL_PUSHGATEWAY)",
                inv.origin
            );
        }
    }
    assert!(cronjobs >= 1, "no CronJobs in k8s/");
}

#[test]
fn schedulers_start_each_policys_job_at_least_once_per_rpo() {
    let docs = manifests();
    let pods = pods(&docs);
    let (found, parsed) = parsed_invocations(&pods);
    let mut schedulers = 0;
    let mut policies = BTreeSet::new();
    for (inv, p) in found.iter().zip(&parsed).filter(|(_, p)| p.name() == "schedule") {
        schedulers += 1;
        // Between a policy's fire times (api-db's are up to 6 h apart) only the `--every` jobs bring
        // the copies, WAL included, and the metrics up to date. Spelled out, not left to the
        // default: the RPO of the DR copy depends on it.
        let text = p.value("every").unwrap_or_else(|| {
            panic!("{}: pass --every (the copies and the metrics stay fresh between fire times)", inv.origin)
        });
        let every = drctl::cli::parse_duration(text).unwrap_or_else(|e| panic!("{}: --every {text}: {e}", inv.origin));
        assert!(
            every > chrono::Duration::zero(),
            "{}: --every {text} turns the runs between fire times off: the copies would wait for the schedules",
            inv.origin
        );
        let pod = &pods[inv.pod];
        let container = &pod.containers[inv.container];
        let dir = p.value("policies").expect("schedule --policies");
        let keys = policy_keys(&docs, pod, container, dir, true).unwrap_or_else(|e| panic!("{}: {e}", inv.origin));
        assert!(!keys.is_empty(), "{}: {dir} holds no policy", inv.origin);
        for mounted in keys {
            let Mounted::ConfigMap { key, .. } = mounted else {
                panic!("{}: {dir} is not a ConfigMap volume", inv.origin)
            };
            let policy = load_shipped(&key);
            let rpo = policy.targets.rpo;
            assert!(
                every <= rpo,
                "{}: --every {text} ({}s) is longer than the RPO of policy {} ({}s)",
                inv.origin,
                every.num_seconds(),
                policy.name,
                rpo.num_seconds()
            );
            policies.insert(policy.name.clone());
        }
    }
    assert!(schedulers >= 2, "the scheduler Deployment and the api-db sidecar run `drctl schedule`");
    assert!(policies.len() >= 2, "policies run by a scheduler: {policies:?}");
}

#[test]
fn every_policy_a_manifest_runs_is_a_shipped_policy_verbatim_with_what_it_needs_in_its_pod() {
    let docs = manifests();
    let pods = pods(&docs);
    let (found, parsed) = parsed_invocations(&pods);
    let shipped = shipped_policies();

    // The policies ConfigMap holds every shipped policy, byte for byte, and nothing else.
    let configmap = object_keys(&docs, "ConfigMap", "drctl-policies").expect("ConfigMap drctl-policies in k8s/");
    assert_eq!(configmap.keys().collect::<Vec<_>>(), shipped.keys().collect::<Vec<_>>(), "drctl-policies' keys");
    for (key, text) in &configmap {
        assert!(
            *text == shipped[key],
            "ConfigMap drctl-policies: {key} differs from policies/{key}: regenerate k8s/policies-configmap.yaml"
        );
        load_shipped(key);
    }

    let mut runners: Vec<Runner> = Vec::new();
    let mut problems = Vec::new();
    for (i, (inv, p)) in found.iter().zip(&parsed).enumerate() {
        let pod = &pods[inv.pod];
        let container = &pod.containers[inv.container];
        let (path, directory) = match p.name().as_str() {
            "backup" if p.has("policy") => (p.value("policy").unwrap(), false),
            "schedule" => (p.value("policies").expect("schedule --policies"), true),
            _ => continue,
        };
        let keys = match policy_keys(&docs, pod, container, path, directory) {
            Ok(keys) => keys,
            Err(e) => {
                problems.push(format!("{}: {e}", inv.origin));
                continue;
            }
        };
        assert!(!keys.is_empty(), "{}: {path} holds no policy", inv.origin);
        for mounted in keys {
            let Mounted::ConfigMap { name, key } = mounted else {
                problems.push(format!("{}: {path} is a Secret: policies live in ConfigMaps", inv.origin));
                continue;
            };
            let content = object_keys(&docs, "ConfigMap", &name).and_then(|keys| keys.get(&key).cloned());
            match (content, shipped.get(&key)) {
                (Some(content), Some(file)) if content == *file => {}
                (None, _) => problems.push(format!("{}: ConfigMap {name} of k8s/ has no key {key}", inv.origin)),
                _ => problems.push(format!("{}: {name}/{key} is not policies/{key} verbatim", inv.origin)),
            }
            let policy = load_shipped(&key);
            let known: Vec<&str> = policy
                .sources
                .iter()
                .map(|s| s.name.as_str())
                .chain(policy.rds.iter().map(|_| "rds-snapshot"))
                .collect();
            for source in p.values("source") {
                if !known.contains(&source.as_str()) {
                    problems.push(format!("{}: policy {} has no source {source} ({known:?})", inv.origin, policy.name));
                }
            }
            check_runner(&docs, pod, container, &policy, &mut problems);
            runners.push(Runner { invocation: i, file: key, sources: p.values("source").to_vec() });
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Each policy runs in exactly one place: the CronJobs, or the scheduler Deployment instead of
    // the CronJobs of its policies, or the database pod's sidecar, never two of them at once.
    for file in shipped.keys() {
        let of_policy: Vec<&Runner> = runners.iter().filter(|r| r.file == *file).collect();
        let kind = |r: &Runner| pods[found[r.invocation].pod].kind.clone();
        let place = |r: &Runner| found[r.invocation].origin.clone();
        let cronjobs = of_policy.iter().filter(|r| kind(r) == "CronJob").count();
        let schedulers = of_policy.iter().filter(|r| kind(r) == "Deployment").count();
        let others = of_policy.len() - cronjobs - schedulers;
        let places: Vec<String> = of_policy.iter().map(|r| place(r)).collect();
        assert!(!of_policy.is_empty(), "policies/{file} runs nowhere in k8s/");
        assert!(
            of_policy.iter().all(|r| r.sources.is_empty()),
            "policies/{file}: a runner that forces sources with --source runs them at every job: {places:?}"
        );
        assert_eq!(cronjobs + others, 1, "policies/{file} must run in exactly one place: {places:?}");
        assert!(
            schedulers <= cronjobs,
            "policies/{file}: the scheduler Deployment may only replace a CronJob: {places:?}"
        );
    }
}

#[test]
fn schedulers_serve_what_their_probes_and_prometheus_expect() {
    let docs = manifests();
    let pods = pods(&docs);
    let (found, parsed) = parsed_invocations(&pods);
    let mut schedulers = 0;
    for (inv, p) in found.iter().zip(&parsed).filter(|(_, p)| p.name() == "schedule") {
        schedulers += 1;
        let pod = &pods[inv.pod];
        let c = &pod.containers[inv.container];
        let listen =
            p.value("listen").unwrap_or_else(|| panic!("{}: serve /metrics and /healthz (--listen)", inv.origin));
        let port = listen.rsplit_once(':').map(|(_, port)| port.to_string()).expect("HOST:PORT");
        let ports = get_maps(&c.node, &["ports"]);
        let named = ports
            .iter()
            .find(|m| get_str(m, &["containerPort"]) == Some(&port))
            .and_then(|m| get_str(m, &["name"]))
            .unwrap_or_else(|| panic!("{}: no named containerPort {port}", inv.origin));
        for probe in ["livenessProbe", "readinessProbe"] {
            let get =
                get_map(&c.node, &[probe, "httpGet"]).unwrap_or_else(|| panic!("{}: no {probe}.httpGet", inv.origin));
            assert_eq!(get_str(get, &["path"]), Some("/healthz"), "{}: {probe}", inv.origin);
            let probed = get_str(get, &["port"]).unwrap_or_default();
            assert!(
                probed == port || probed == named,
                "{}: {probe} probes port {probed}, drctl listens on {port}",
                inv.origin
            );
        }
        assert_eq!(pod.annotations.get("prometheus.io/scrape").map(String::as_str), Some("true"), "{}", inv.origin);
        assert_eq!(pod.annotations.get("prometheus.io/port"), Some(&port), "{}: prometheus.io/port", inv.origin);
        if pod.kind == "Deployment" {
            let doc = &docs[pod.doc];
            assert_eq!(
                get_str(&doc.node, &["spec", "replicas"]),
                Some("1"),
                "{}: two schedulers run every job twice",
                pod.at
            );
            assert_eq!(
                get_str(&doc.node, &["spec", "strategy", "type"]),
                Some("Recreate"),
                "{}: never two at once",
                pod.at
            );
            let grace: u32 =
                get_str(&pod.spec, &["terminationGracePeriodSeconds"]).and_then(|s| s.parse().ok()).unwrap_or(30);
            assert!(grace >= 3600, "{}: SIGTERM lets a running job finish: give it time", pod.at);
            // A Service in the same file exposes the metrics port.
            let service = docs.iter().find(|d| {
                d.kind() == "Service"
                    && d.file.split(' ').next() == Some(pod.file.as_str())
                    && string_map(get_map(&d.node, &["spec", "selector"]))
                        .iter()
                        .all(|(k, v)| pod.labels.get(k) == Some(v))
            });
            let service = service.unwrap_or_else(|| panic!("{}: no Service selects the scheduler", pod.at));
            let exposed = get_maps(&service.node, &["spec", "ports"]).iter().any(|m| {
                get_str(m, &["name"]) == Some("metrics")
                    && (get_str(m, &["targetPort"]) == Some(named) || get_str(m, &["targetPort"]) == Some(&port))
            });
            assert!(exposed, "{}: the Service has no port `metrics` to {port}", service.at());
        }
    }
    assert!(schedulers >= 2, "the scheduler Deployment and the api-db sidecar run `drctl schedule`");
}

#[test]
fn drctl_containers_run_unprivileged_with_enough_memory() {
    let docs = manifests();
    let pods = pods(&docs);
    let (found, _) = parsed_invocations(&pods);
    for inv in &found {
        let pod = &pods[inv.pod];
        let c = &pod.containers[inv.container];
        let context =
            |key: &str| get_str(&c.node, &["securityContext", key]).or(get_str(&pod.spec, &["securityContext", key]));
        assert_eq!(context("runAsNonRoot"), Some("true"), "{}: runAsNonRoot", inv.origin);
        assert!(context("runAsUser").is_some_and(|u| u != "0"), "{}: runAsUser", inv.origin);
        assert_eq!(context("readOnlyRootFilesystem"), Some("true"), "{}: readOnlyRootFilesystem", inv.origin);
        assert_eq!(context("allowPrivilegeEscalation"), Some("false"), "{}: allowPrivilegeEscalation", inv.origin);
        let tmp = c.mounts.iter().find(|m| m.path == "/tmp");
        assert!(
            tmp.is_some_and(|m| matches!(pod.volumes.get(&m.volume), Some(Volume::EmptyDir))),
            "{}: a read-only root needs an emptyDir at /tmp",
            inv.origin
        );
        if is_drctl_image(&c.image) {
            // drctl peaks below 256 MiB.
            let limit = get_str(&c.node, &["resources", "limits", "memory"]).map(mebibytes);
            let request = get_str(&c.node, &["resources", "requests", "memory"]).map(mebibytes);
            assert!(limit.is_some_and(|l| (256..=2048).contains(&l)), "{}: memory limit {limit:?} MiB", inv.origin);
            assert!(
                request.is_some_and(|r| r >= 128 && Some(r) <= limit),
                "{}: memory request {request:?} MiB",
                inv.origin
            );
        }
    }
}

/// A Kubernetes memory quantity in MiB.
fn mebibytes(quantity: &str) -> u64 {
    let units =
        [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000)];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| quantity.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((quantity, 1));
    (number.parse::<u64>().unwrap_or_else(|_| panic!("memory quantity {quantity:?}")) * unit) >> 20
}

#[test]
fn secrets_are_templates_without_secrets() {
    let docs = manifests();
    for doc in docs.iter().filter(|d| d.kind() == "Secret") {
        assert!(get(&doc.node, &["data"]).is_none(), "{}: use stringData placeholders, not data", doc.at());
        for (key, value) in string_map(get_map(&doc.node, &["stringData"])) {
            assert!(value.starts_with("REPLACE-ME"), "{}: {key} should be a REPLACE-ME placeholder", doc.at());
        }
    }
    // Every drctl Secret and ConfigMap a pod uses is defined in k8s/ (the ones of the protected
    // services and the RDS certificates are theirs, and k8s/README.md lists them).
    for pod in pods(&docs) {
        let mut used: Vec<(&str, String)> = pod
            .volumes
            .values()
            .filter_map(|v| match v {
                Volume::ConfigMap { name, .. } => Some(("ConfigMap", name.clone())),
                Volume::Secret { name, .. } => Some(("Secret", name.clone())),
                _ => None,
            })
            .collect();
        for c in &pod.containers {
            used.extend(c.env.values().filter_map(|v| match v {
                EnvValue::SecretKey { secret, .. } => Some(("Secret", secret.clone())),
                _ => None,
            }));
        }
        for (kind, name) in used {
            if name.starts_with("drctl") {
                assert!(object_keys(&docs, kind, &name).is_some(), "{}: {kind} {name} is not in k8s/", pod.at);
            } else {
                assert!(
                    read("k8s/README.md").contains(&format!("`{name}`")),
                    "{}: k8s/README.md should say where {kind} {name} comes from",
                    pod.at
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

struct Instruction {
    keyword: String,
    rest: String,
}

struct Dockerfile {
    /// Instructions per stage, each stage starting with its FROM.
    stages: Vec<Vec<Instruction>>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let text = read("Dockerfile");
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        let mut stages: Vec<Vec<Instruction>> = Vec::new();
        for line in logical.iter().filter(|l| !l.trim().is_empty()) {
            let (keyword, rest) = line.trim().split_once(char::is_whitespace).unwrap_or((line.trim(), ""));
            let instruction = Instruction { keyword: keyword.to_ascii_uppercase(), rest: rest.trim().to_string() };
            if instruction.keyword == "FROM" {
                stages.push(Vec::new());
            }
            if instruction.keyword != "ARG" || !stages.is_empty() {
                stages.last_mut().expect("the Dockerfile starts with FROM").push(instruction);
            }
        }
        Dockerfile { stages }
    }

    fn last_stage(&self) -> usize {
        self.stages.len() - 1
    }

    /// The FROM of a stage: image and stage name.
    fn from(&self, stage: usize) -> (String, Option<String>) {
        let words: Vec<&str> = self.stages[stage][0].rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        let name = (words.len() == 3 && words[1].eq_ignore_ascii_case("as")).then(|| words[2].to_string());
        (words[0].to_string(), name)
    }

    fn all(&self, stage: usize, keyword: &str) -> Vec<&str> {
        self.stages[stage].iter().filter(|i| i.keyword == keyword).map(|i| i.rest.as_str()).collect()
    }

    /// The last such instruction of the stage, in exec (JSON) form.
    fn exec_form(&self, stage: usize, keyword: &str) -> Option<Vec<String>> {
        let rest = *self.all(stage, keyword).last()?;
        Some(
            serde_json::from_str(rest)
                .unwrap_or_else(|e| panic!("Dockerfile: {keyword} {rest}: use the exec form: {e}")),
        )
    }
}

/// Whether .dockerignore keeps `path` out of the build context (the last matching pattern wins;
/// a pattern matches a path or any of its parents; `*` and `?` within one path component).
fn docker_ignored(patterns: &[String], path: &str) -> bool {
    fn glob(pattern: &[u8], text: &[u8]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..])),
            (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut ignored = false;
    for pattern in patterns {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern.as_str()),
        };
        let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        assert!(!parts.contains(&"**"), ".dockerignore: this test does not understand `**`");
        let matched = parts.len() <= components.len()
            && parts.iter().zip(&components).all(|(p, c)| glob(p.as_bytes(), c.as_bytes()));
        if matched {
            ignored = !negated;
        }
    }
    ignored
}

#[test]
fn the_dockerfile_builds_drctl_and_runs_it_unprivileged_under_tini_with_the_postgresql_client() {
    let dockerfile = Dockerfile::read();
    let last = dockerfile.last_stage();
    assert!(last >= 1, "a multi-stage build: a build stage and a slim runtime stage");
    let stage_names: Vec<Option<String>> = (0..=last).map(|s| dockerfile.from(s).1).collect();
    assert!(stage_names[..last].iter().all(Option::is_some), "name the build stages (FROM … AS name): {stage_names:?}");

    // The build stage: the locked release build, from the sources .dockerignore lets in.
    let build = (0..last)
        .find(|&s| dockerfile.all(s, "RUN").iter().any(|r| r.contains("cargo build --release --locked")))
        .expect("a stage runs `cargo build --release --locked`");
    let (build_image, build_name) = dockerfile.from(build);
    assert!(build_image.starts_with("rust:"), "the build stage starts from a rust image: {build_image}");
    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut copied = Vec::new();
    for copy in dockerfile.all(build, "COPY") {
        let words: Vec<&str> = copy.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for source in &words[..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(root().join(source).exists(), "Dockerfile: COPY {source}: no such file");
            assert!(!docker_ignored(&ignore, source), ".dockerignore keeps {source} out, which the Dockerfile copies");
            copied.push(source.to_string());
        }
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied.iter().any(|c| c == needed), "the build stage does not copy {needed}: {copied:?}");
    }
    // cargo reads no manifest whose [[bench]] files are missing.
    let manifest = read("Cargo.toml");
    for bench in manifest.split("[[bench]]").skip(1) {
        let name = bench
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("name")
                    .map(|v| v.trim().trim_start_matches('=').trim().trim_matches('"').to_string())
            })
            .expect("a [[bench]] has a name");
        let file = format!("benches/{name}.rs");
        assert!(
            copied.iter().any(|c| file == *c || file.starts_with(&format!("{c}/"))),
            "Cargo.toml declares bench {name}: the build stage must copy {file}"
        );
        assert!(!docker_ignored(&ignore, &file), ".dockerignore keeps {file} out");
    }
    for path in ["target", "target/release/drctl", ".git", "bench", "tests/it/main.rs", ".venv"] {
        assert!(docker_ignored(&ignore, path), ".dockerignore should keep {path} out of the build context");
    }

    // The runtime stage.
    let (runtime_image, _) = dockerfile.from(last);
    assert!(
        runtime_image.starts_with("debian:") && runtime_image.ends_with("-slim"),
        "a slim Debian runtime: {runtime_image}"
    );
    let installs = dockerfile.all(last, "RUN").join("\n");
    for package in ["postgresql-client-15", "ca-certificates", "tini"] {
        assert!(installs.split_whitespace().any(|w| w == package), "the runtime stage installs {package}");
    }
    assert!(installs.contains("--no-install-recommends"), "apt-get install --no-install-recommends");
    let user = *dockerfile.all(last, "USER").last().expect("a USER in the runtime stage");
    let user = user.split(':').next().unwrap();
    assert!(user != "root" && user != "0" && !user.is_empty(), "USER {user}: run as a non-root user");
    assert!(user.parse::<u32>().is_ok(), "USER {user}: numeric, so runAsNonRoot can verify it");
    let entrypoint = dockerfile.exec_form(last, "ENTRYPOINT").expect("an ENTRYPOINT");
    assert!(entrypoint.len() >= 3 && is_program(&entrypoint[0], "tini"), "ENTRYPOINT {entrypoint:?}: tini first");
    let binary = image_binary();
    assert_eq!(drctl_argv(&entrypoint), Some(Vec::new()), "ENTRYPOINT {entrypoint:?}: tini -- drctl, nothing after");
    // The binary the ENTRYPOINT runs is the one the build stage made.
    let from_build = dockerfile.all(last, "COPY").into_iter().any(|copy| {
        let words: Vec<&str> = copy.split_whitespace().collect();
        let from = words.iter().find_map(|w| w.strip_prefix("--from="));
        let from_ok = from.is_some_and(|f| Some(f.to_string()) == build_name || f == build.to_string());
        from_ok && words.last() == Some(&binary.as_str()) && words.iter().any(|w| w.contains("drctl"))
    });
    assert!(from_build, "the runtime stage copies the build stage's drctl to {binary}");
    // CMD: drctl arguments that parse (`--help` counts).
    if let Some(cmd) = dockerfile.exec_form(last, "CMD") {
        let full: Vec<String> = std::iter::once("drctl".to_string()).chain(cmd.iter().cloned()).collect();
        match Cli::try_parse_from(&full) {
            Ok(_) => {}
            Err(e)
                if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            }
            Err(e) => panic!("Dockerfile CMD {cmd:?} does not parse:\n{}", e.render()),
        }
    }
    // The manifests' copy of the binary runs in the postgres image: same Debian release as the
    // image it was built in, so the glibc it needs is there.
    let release = build_image.rsplit('-').next().unwrap().to_string();
    assert!(
        runtime_image.contains(&release),
        "build ({build_image}) and runtime ({runtime_image}) on one Debian release"
    );
    for pod in pods(&manifests()) {
        for c in pod.containers.iter().filter(|c| c.runs_postgres()) {
            if c.mounts.iter().any(|m| m.path.contains("drctl")) {
                assert!(
                    c.image.contains(&release),
                    "{}: {} runs drctl built on Debian {release}: pin its -{release} tag",
                    pod.at,
                    c.image
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Monitoring

/// The `drctl_…` metric names in a PromQL expression.
fn drctl_metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("drctl_").map(|p| p + i) {
        let boundary =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':');
        let end = at
            + expr[at..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(expr.len() - at);
        if boundary {
            names.insert(expr[at..end].to_string());
        }
        i = end;
    }
    names
}

struct Alert {
    name: String,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn alert_rules() -> Vec<Alert> {
    let node = parse_yaml("monitoring/prometheus-rules.yaml", &read("monitoring/prometheus-rules.yaml"));
    let groups = get_maps(&node, &["groups"]);
    assert!(!groups.is_empty(), "monitoring/prometheus-rules.yaml: no groups");
    let mut alerts = Vec::new();
    for group in groups {
        for rule in get_maps(group, &["rules"]) {
            alerts.push(Alert {
                name: get_str(rule, &["alert"]).or(get_str(rule, &["record"])).unwrap_or_default().to_string(),
                expr: get_str(rule, &["expr"]).unwrap_or_default().to_string(),
                labels: string_map(get_map(rule, &["labels"])),
                annotations: string_map(get_map(rule, &["annotations"])),
            });
        }
    }
    alerts
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("monitoring/grafana-dashboard.json"))
        .unwrap_or_else(|e| panic!("monitoring/grafana-dashboard.json: {e}"))
}

/// The dashboard's panels, those inside rows too.
fn dashboard_panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("a panels array") {
        panels.extend(panel["panels"].as_array().into_iter().flatten().cloned());
        if panel["type"] != "row" {
            panels.push(panel.clone());
        }
    }
    panels
}

fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in dashboard_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            exprs.push((
                format!("panel {title:?} target {}", target["refId"]),
                target["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        for query in [&var["definition"], &var["query"], &var["query"]["query"]] {
            if let Some(q) = query.as_str() {
                exprs.push((format!("variable {name}"), q.to_string()));
            }
        }
    }
    exprs
}

#[test]
fn the_alert_rules_and_the_dashboard_use_only_metrics_drctl_exports() {
    let exported: BTreeSet<&str> = drctl::metrics::METRIC_NAMES.iter().copied().collect();
    let mut problems = Vec::new();
    let alerts = alert_rules();
    assert!(alerts.len() >= 10, "too few alert rules: {}", alerts.len());
    let readme = read("monitoring/README.md");
    for alert in &alerts {
        let names = drctl_metric_names(&alert.expr);
        if names.is_empty() && !alert.expr.contains("drctl-") {
            problems.push(format!("alert {}: its expr uses no drctl metric", alert.name));
        }
        for name in names.iter().filter(|n| !exported.contains(n.as_str())) {
            problems.push(format!("alert {}: drctl exports no {name}", alert.name));
        }
        if !["critical", "warning"].contains(&alert.labels.get("severity").map_or("", String::as_str)) {
            problems.push(format!("alert {}: severity critical or warning", alert.name));
        }
        for key in ["summary", "description", "runbook_url"] {
            if alert.annotations.get(key).is_none_or(|v| v.trim().is_empty()) {
                problems.push(format!("alert {}: no {key} annotation", alert.name));
            }
        }
        let anchor = format!("#{}", alert.name.to_lowercase());
        if !alert.annotations.get("runbook_url").is_some_and(|u| u.ends_with(&anchor)) {
            problems.push(format!("alert {}: runbook_url should end with {anchor}", alert.name));
        }
        if !readme.lines().any(|l| l == format!("## {}", alert.name)) {
            problems.push(format!("alert {}: monitoring/README.md has no `## {}` section", alert.name, alert.name));
        }
    }
    let names: BTreeSet<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    for expected in [
        "DrctlBackupTooOld",
        "DrctlBackupNeverSucceeded",
        "DrctlWalArchiveLag",
        "DrctlWalArchiveFailing",
        "DrctlCopyMissing",
        "DrctlCopyFailing",
        "DrctlRetentionFailing",
        "DrctlJobFailed",
        "DrctlSchedulerDown",
        "DrctlRdsSnapshotTooOld",
    ] {
        if !names.contains(expected) {
            problems.push(format!("no alert {expected}"));
        }
    }

    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let panels = dashboard_panels(&dashboard);
    assert!(panels.len() >= 8, "too few panels: {}", panels.len());
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        if !ids.insert(panel["id"].as_u64()) {
            problems.push(format!("panel {title:?}: id {} used twice", panel["id"]));
        }
        if panel["datasource"].is_null() {
            problems.push(format!("panel {title:?}: no datasource"));
        }
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        if targets.is_empty() || targets.iter().any(|t| t["expr"].as_str().is_none_or(str::is_empty)) {
            problems.push(format!("panel {title:?}: every panel needs a query"));
        }
    }
    let policy_variable =
        dashboard["templating"]["list"].as_array().into_iter().flatten().find(|v| v["name"] == "policy");
    let policy_query =
        policy_variable.map(|v| v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default());
    if policy_query != Some("label_values(drctl_job_last_run_timestamp_seconds, policy)") {
        problems.push(format!("the `policy` variable's query: {policy_query:?}"));
    }
    let mut shown = BTreeSet::new();
    for (what, expr) in dashboard_exprs(&dashboard) {
        for name in drctl_metric_names(&expr) {
            if !exported.contains(name.as_str()) {
                problems.push(format!("dashboard {what}: drctl exports no {name}"));
            }
            shown.insert(name);
        }
    }
    for name in &exported {
        if !shown.contains(*name) {
            problems.push(format!("the dashboard shows nothing of {name}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn promtool_accepts_the_rules_their_unit_tests_and_the_dashboards_queries() {
    let Some(promtool) = on_path("promtool") else {
        eprintln!("promtool is not installed (Debian: apt-get install prometheus): rules not checked by promtool");
        return;
    };
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(&promtool).args(args).current_dir(root()).output().expect("promtool runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {:?} failed:\n{text}", args);
    };
    run(&["check".as_ref(), "rules".as_ref(), "monitoring/prometheus-rules.yaml".as_ref()]);
    run(&["test".as_ref(), "rules".as_ref(), "monitoring/prometheus-rules.test.yaml".as_ref()]);

    // The dashboard's queries are PromQL too: as recording rules, with Grafana's variables filled.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let exprs = dashboard_exprs(&dashboard());
    for (i, (_, expr)) in exprs.iter().filter(|(what, _)| what.starts_with("panel")).enumerate() {
        let expr = expr.replace("$policy", ".*").replace("$__rate_interval", "5m").replace("$__interval", "1m");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).unwrap();
    run(&["check".as_ref(), "rules".as_ref(), file.as_os_str()]);
}

#[test]
fn the_helpers_of_these_tests_read_what_they_are_given() {
    assert_eq!(
        split_documents("# only a comment\n---\na: 1\n---\n\n---\nb: 2\n  ---\n"),
        vec!["a: 1\n", "b: 2\n  ---\n"]
    );
    assert_eq!(
        shell_words("/opt/drctl wal-push  --async 'pg_wal/a b' \"x\""),
        ["/opt/drctl", "wal-push", "--async", "pg_wal/a b", "x"]
    );
    let words: Vec<String> = [
        "-c",
        "archive_mode=on",
        "-c",
        "archive_command='drctl wal-push %p'",
        "-crestore_command=drctl wal-fetch %f %p",
        "--archive_cleanup_command=x",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        postgres_settings(&words),
        [
            ("archive_command".to_string(), "drctl wal-push %p".to_string()),
            ("restore_command".to_string(), "drctl wal-fetch %f %p".to_string()),
            ("archive_cleanup_command".to_string(), "x".to_string()),
        ]
    );
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        drctl_argv(&words(&["/usr/bin/tini", "--", "/usr/local/bin/drctl", "schedule"])),
        Some(words(&["schedule"]))
    );
    assert_eq!(drctl_argv(&words(&["cp", "/usr/local/bin/drctl", "/opt/drctl/bin/drctl"])), None);
    assert!(
        is_drctl_image("ghcr.io/acme/drctl:0.1.0")
            && !is_drctl_image("ghcr.io/acme/drctl-tools:1")
            && !is_drctl_image("postgres:15")
    );
    assert_eq!(
        drctl_metric_names("time() - drctl_a_b{x=\"drctl-c\"} > on (p) xdrctl_d + drctl_e_total"),
        BTreeSet::from(["drctl_a_b".to_string(), "drctl_e_total".to_string()])
    );
    let ignore: Vec<String> = ["*", "!src/", "!benches", "src/secret"].map(String::from).to_vec();
    assert!(
        docker_ignored(&ignore, "target")
            && docker_ignored(&ignore, ".git/HEAD")
            && docker_ignored(&ignore, "src/secret")
    );
    assert!(!docker_ignored(&ignore, "src/main.rs") && !docker_ignored(&ignore, "benches/repo.rs"));
    for plain in ["true", "on", "No", "9187", "0440", "1e3", "~", "12:30"] {
        assert!(yaml11_not_a_string(plain), "{plain}");
    }
    for text in ["json", "/metrics", "0.0.0.0:9187", "us-east-1", "10m", "s3://b/p"] {
        assert!(!yaml11_not_a_string(text), "{text}");
    }
    assert_eq!(mebibytes("512Mi"), 512);
    assert_eq!(mebibytes("1Gi"), 1024);
    // The container's environment gives the flags drctl would read from it.
    let env = BTreeMap::from([
        ("DRCTL_REPO".to_string(), "/r".to_string()),
        ("DRCTL_LOG_FORMAT".to_string(), "json".to_string()),
    ]);
    let parsed = parse_cli(&words(&["wal-push", "--async", "pg_wal/000000010000000000000001"]), &env).unwrap();
    assert_eq!(parsed.name(), "wal-push");
    assert_eq!(parsed.value("repo"), Some("/r"));
    assert_eq!(parsed.value("log-format"), Some("json"));
    let refused = parse_cli(&words(&["wal-push", "--asinc", "x"]), &env);
    assert!(refused.is_err_and(|e| e.contains("--asinc")), "an unknown flag is refused");
}
