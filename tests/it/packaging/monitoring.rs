//! Monitoring: the Prometheus alert rules and the Grafana dashboard in monitoring/ use only
//! metrics drctl exports, and promtool accepts them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use crate::harness::on_path;

use super::{get_map, get_maps, get_str, parse_yaml, read, root, string_map};

/// The `drctl_…` metric names in a PromQL expression.
pub fn drctl_metric_names(expr: &str) -> BTreeSet<String> {
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
