//! The Kubernetes manifests in k8s/: YAML that Kubernetes reads as meant, drctl command lines
//! that drctl's CLI accepts, the policies they run shipped verbatim with what they need, schedules
//! often enough for each policy's RPO, probes and scrape settings that match, unprivileged
//! containers with enough memory, and Secrets that hold no secret.

use std::collections::BTreeSet;
use std::path::Path;

use drctl::policy::{BaseMode, Schedule, SourceKind};
use marked_yaml::Node;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};

use super::cmdline::{Parsed, cli_env_vars, parsed_invocations, postgres_settings, shell_words};
use super::dockerfile::image_binary;
use super::manifests::{
    EnvValue, Mounted, Volume, is_drctl_image, is_program, manifest_files, manifests, object_keys, pods, scalar_values,
    yaml11_not_a_string,
};
use super::policies::{Runner, check_runner, irsa_service_account, load_shipped, policy_keys, shipped_policies};
use super::{get, get_map, get_maps, get_str, read, string_map};

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
            let file = p.value("policy").expect("CronJobs run policies");
            let policy = load_shipped(Path::new(file).file_name().unwrap().to_str().unwrap());
            assert!(
                inv.env.contains_key("DRCTL_PUSHGATEWAY") || p.has("pushgateway") || p.has("metrics-file"),
                "{}: a CronJob's metrics must go somewhere (DRCTL_PUSHGATEWAY)",
                inv.origin
            );
            match p.name().as_str() {
                "backup" => {}
                // A drill restores into a scratch directory of its own pod: a new directory inside
                // a writable volume, so the read-only root filesystem is never written.
                "drill" => {
                    let scratch = p.value("scratch").unwrap_or_else(|| panic!("{}: drill --scratch", inv.origin));
                    let mounts = pod.containers[inv.container].mounts.iter();
                    let parent = Path::new(scratch).parent().unwrap();
                    assert!(
                        mounts.clone().any(|m| Path::new(&m.path) == parent && !m.read_only),
                        "{}: --scratch {scratch} must be a new directory in a writable volume",
                        inv.origin
                    );
                    continue;
                }
                other => panic!("{}: a CronJob runs `drctl {other}`, not a policy's job or drill", inv.origin),
            }
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
pub fn mebibytes(quantity: &str) -> u64 {
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
