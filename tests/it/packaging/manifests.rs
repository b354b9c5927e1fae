//! The YAML documents of k8s/, read as Kubernetes reads them, and the pod templates in them: their
//! containers (command, args, environment, mounts) and volumes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::{get, get_map, get_maps, get_str, get_strs, parse_yaml, root, split_documents, string_map};

/// One YAML document of a manifest file.
pub struct Doc {
    pub file: String,
    pub node: MarkedMappingNode,
}

impl Doc {
    pub fn kind(&self) -> &str {
        get_str(&self.node, &["kind"]).unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        get_str(&self.node, &["metadata", "name"]).unwrap_or_default()
    }

    pub fn at(&self) -> String {
        format!("{}: {} {}", self.file, self.kind(), self.name())
    }
}

pub fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("k8s"))
        .expect("k8s/ exists")
        .map(|e| e.expect("k8s/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

pub fn manifests() -> Vec<Doc> {
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
pub fn yaml11_not_a_string(s: &str) -> bool {
    const WORDS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", ""];
    let digits = s.trim_start_matches(['-', '+']);
    WORDS.contains(&s.to_ascii_lowercase().as_str())
        || s.parse::<f64>().is_ok()
        || digits.starts_with("0x")
        || digits.starts_with("0o")
        || (digits.contains(':') && digits.split(':').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
}

#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    Value(String),
    SecretKey { secret: String, key: String },
    Other,
}

#[derive(Debug, Clone)]
pub struct Mount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub enum Volume {
    ConfigMap { name: String, items: Option<Vec<(String, String)>> },
    Secret { name: String, items: Option<Vec<(String, String)>> },
    EmptyDir,
    Claim,
    Other,
}

pub struct Container {
    pub name: String,
    pub init: bool,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, EnvValue>,
    pub mounts: Vec<Mount>,
    pub node: MarkedMappingNode,
}

impl Container {
    /// The environment as the process sees it: a value from a Secret stands in as a placeholder.
    pub fn env_strings(&self) -> BTreeMap<String, String> {
        let text = |v: &EnvValue| match v {
            EnvValue::Value(v) => v.clone(),
            _ => "<from a secret>".to_string(),
        };
        self.env.iter().map(|(k, v)| (k.clone(), text(v))).collect()
    }

    pub fn env_value(&self, name: &str) -> Option<&str> {
        match self.env.get(name) {
            Some(EnvValue::Value(v)) => Some(v),
            _ => None,
        }
    }

    /// The mount a path lies in (the deepest one).
    pub fn mount_of(&self, path: &str) -> Option<&Mount> {
        self.mounts
            .iter()
            .filter(|m| path == m.path || path.starts_with(&format!("{}/", m.path)))
            .max_by_key(|m| m.path.len())
    }

    pub fn runs_postgres(&self) -> bool {
        let repository = self.image.rsplit_once(':').map_or(self.image.as_str(), |(r, _)| r);
        repository == "postgres" || repository.ends_with("/postgres")
    }
}

pub fn is_drctl_image(image: &str) -> bool {
    let repository = image.rsplit_once(':').map_or(image, |(r, _)| r);
    repository.rsplit('/').next() == Some("drctl")
}

pub fn is_program(word: &str, name: &str) -> bool {
    word == name || word.ends_with(&format!("/{name}"))
}

/// drctl's arguments, when these words run drctl (directly or under tini).
pub fn drctl_argv(words: &[String]) -> Option<Vec<String>> {
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
pub struct Pod {
    /// Index of the document in `manifests()`.
    pub doc: usize,
    pub at: String,
    pub file: String,
    pub kind: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: MarkedMappingNode,
    pub containers: Vec<Container>,
    pub volumes: BTreeMap<String, Volume>,
}

impl Pod {
    pub fn service_account(&self) -> Option<&str> {
        get_str(&self.spec, &["serviceAccountName"])
    }
}

/// The scalar values of a mapping, each named `what KEY`.
pub fn scalar_values<'a>(map: Option<&'a MarkedMappingNode>, what: &str) -> Vec<(String, &'a MarkedScalarNode)> {
    let entries = map.into_iter().flat_map(|m| m.iter());
    entries.filter_map(|(k, v)| Some((format!("{what} {}", k.as_str()), v.as_scalar()?))).collect()
}

pub fn items(map: &MarkedMappingNode) -> Option<Vec<(String, String)>> {
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

pub fn pods(docs: &[Doc]) -> Vec<Pod> {
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
pub enum Mounted {
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
}

pub fn mounted_file(pod: &Pod, container: &Container, path: &str) -> Option<Mounted> {
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
pub fn object_keys(docs: &[Doc], kind: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let doc = docs.iter().find(|d| d.kind() == kind && d.name() == name)?;
    let mut keys = string_map(get_map(&doc.node, &["data"]));
    keys.extend(string_map(get_map(&doc.node, &["stringData"])));
    Some(keys)
}
