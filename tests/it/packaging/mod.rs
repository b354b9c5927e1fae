//! Packaging: the Dockerfile, the Kubernetes manifests in k8s/ and the monitoring in monitoring/,
//! held to drctl itself, since neither Docker nor Kubernetes runs here. One file per artefact:
//!
//! - [`k8s`]: every drctl command line of a manifest parses with drctl's own CLI, with the
//!   container's environment (a container of the drctl image: its `args`, under the
//!   `tini -- drctl` entrypoint; a `command` that runs drctl; PostgreSQL's archive_command and
//!   restore_command); every policy such a command names is a ConfigMap key that is byte for byte
//!   the file in policies/ and a valid policy, and the pod that runs it has what the policy needs
//!   (its password, the paths it backs up, the server's socket and data directory, AWS access),
//!   in exactly one place; CronJob schedules parse as drctl parses cron schedules, and run often
//!   enough for the policy; every `drctl schedule` passes `--every`, no longer than the RPO of
//!   the policies it runs;
//! - [`dockerfile`]: the Dockerfile builds the binary its entrypoint and the manifests use, as a
//!   non-root user;
//! - [`monitoring`]: the alert rules and the dashboard use only metrics drctl exports
//!   (`promtool` checks and unit-tests the rules when it is installed).
//!
//! What the manifest tests read with: [`manifests`] (the YAML documents of k8s/, their pods,
//! containers and volumes), [`cmdline`] (the drctl command lines in them, parsed by drctl's own
//! CLI) and [`policies`] (the shipped policies, and what a pod that runs one must have). Here: the
//! YAML access they all use, and a test of the helpers.

mod cmdline;
mod dockerfile;
mod k8s;
mod manifests;
mod monitoring;
mod policies;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::{LoaderOptions, Node};

use cmdline::{parse_cli, postgres_settings, shell_words};
use dockerfile::docker_ignored;
use k8s::mebibytes;
use manifests::{drctl_argv, is_drctl_image, yaml11_not_a_string};
use monitoring::drctl_metric_names;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

pub fn get<'a>(map: &'a MarkedMappingNode, path: &[&str]) -> Option<&'a Node> {
    let (last, parents) = path.split_last()?;
    let mut map = map;
    for key in parents {
        map = map.get_mapping(key)?;
    }
    map.get_node(last)
}

pub fn get_map<'a>(map: &'a MarkedMappingNode, path: &[&str]) -> Option<&'a MarkedMappingNode> {
    get(map, path)?.as_mapping()
}

pub fn get_str<'a>(map: &'a MarkedMappingNode, path: &[&str]) -> Option<&'a str> {
    get(map, path)?.as_scalar().map(|s| s.as_str())
}

/// The mappings of a sequence (none when the key is absent).
pub fn get_maps<'a>(map: &'a MarkedMappingNode, path: &[&str]) -> Vec<&'a MarkedMappingNode> {
    get(map, path)
        .and_then(Node::as_sequence)
        .map(|s| s.iter().filter_map(Node::as_mapping).collect())
        .unwrap_or_default()
}

/// The scalars of a sequence, or None when the key is absent.
pub fn get_strs(map: &MarkedMappingNode, path: &[&str]) -> Option<Vec<String>> {
    let seq = get(map, path)?.as_sequence()?;
    Some(seq.iter().map(|n| n.as_scalar().map(|s| s.as_str().to_string()).unwrap_or_default()).collect())
}

pub fn string_map(map: Option<&MarkedMappingNode>) -> BTreeMap<String, String> {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_scalar().map(|s| s.as_str().to_string()).unwrap_or_default()))
    })
    .into_iter()
    .flatten()
    .collect()
}

/// The documents of a multi-document YAML file, split on lines that are exactly `---`;
/// documents holding only comments are left out.
pub fn split_documents(text: &str) -> Vec<String> {
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

pub fn parse_yaml(file: &str, text: &str) -> MarkedMappingNode {
    // prevent_coercion: only plain scalars may be read as something other than text, which is
    // how the test tells a quoted "true" from a plain one.
    let options = LoaderOptions::default().error_on_duplicate_keys(true).prevent_coercion(true);
    let node = marked_yaml::parse_yaml_with_options(0, text, options).unwrap_or_else(|e| panic!("{file}: {e}"));
    node.as_mapping().unwrap_or_else(|| panic!("{file}: the document is not a mapping")).clone()
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
