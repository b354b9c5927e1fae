//! The policies shipped in policies/, and what a container that runs one of them must have.

use std::collections::BTreeMap;

use drctl::policy::{self, BaseMode, Connection, KeySlot, Password, Policy, SourceKind};

use super::manifests::{Container, Doc, EnvValue, Mounted, Pod, Volume, mounted_file, object_keys};
use super::{get_str, root};

pub fn shipped_policies() -> BTreeMap<String, String> {
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

pub fn load_shipped(file: &str) -> Policy {
    policy::load(&root().join("policies").join(file)).unwrap_or_else(|invalid| panic!("policies/{file}:\n{invalid}"))
}

/// A policy run by a container: with `backup --policy FILE` or `schedule --policies DIR`.
pub struct Runner {
    pub invocation: usize,
    /// The file name in policies/ (= the ConfigMap key).
    pub file: String,
    /// `--source` names: none means every due source.
    pub sources: Vec<String>,
}

/// The ConfigMap keys a drctl policy argument names, through the container's mounts: a file
/// (`--policy`) or every file of a directory (`--policies`).
pub fn policy_keys(
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
pub fn check_runner(docs: &[Doc], pod: &Pod, container: &Container, policy: &Policy, problems: &mut Vec<String>) {
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
pub fn irsa_service_account(docs: &[Doc], pod: &Pod) -> bool {
    let Some(name) = pod.service_account() else { return false };
    docs.iter().any(|d| {
        d.kind() == "ServiceAccount"
            && d.name() == name
            && get_str(&d.node, &["metadata", "annotations", "eks.amazonaws.com/role-arn"])
                .is_some_and(|arn| arn.starts_with("arn:aws:iam::") && arn.contains(":role/"))
    })
}
