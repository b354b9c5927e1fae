//! The report in Markdown, for a git repository of audit evidence: a summary, one table of every
//! control, then each control with its evidence.

use std::fmt::Write;

use super::{Report, minute, seal, span};

pub fn render(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# DR compliance report: {} — {}\n", r.policy, r.period.label);
    let _ = writeln!(
        md,
        "Period {} to {} UTC, judged as of {} UTC. Policy `{}` ({}); primary repository `{}` (id {}). Targets: RTO \
         {}, RPO {}. drctl {}.\n",
        minute(r.period.from),
        minute(r.period.to),
        minute(r.as_of),
        r.policy,
        r.kind,
        r.repository.location,
        &r.repository.id[..16],
        span(r.targets.rto_seconds),
        span(r.targets.rpo_seconds),
        r.drctl_version
    );
    let _ = writeln!(
        md,
        "**{} PASS, {} FAIL, {} NO-EVIDENCE** of {} controls.\n",
        r.summary.pass,
        r.summary.fail,
        r.summary.no_evidence,
        r.controls.len()
    );
    md.push_str("| Status | Control | Finding |\n|---|---|---|\n");
    for c in &r.controls {
        let _ = writeln!(md, "| {} | {} | {} |", c.status.as_str(), cell(&c.title), cell(&c.finding));
    }
    for c in &r.controls {
        let _ = writeln!(md, "\n## {} — {}\n\n`{}`: {}\n", c.title, c.status.as_str(), c.id, c.finding);
        for e in &c.evidence {
            let _ = writeln!(md, "- {}", e.replace('\n', " "));
        }
    }
    let _ = writeln!(
        md,
        "\n---\nBuilt by drctl from the evidence in the repositories; `drctl report verify FILE` checks this \
         seal.\n\n<!-- {} -->",
        seal::PLACEHOLDER
    );
    md
}

/// Text fit for a table cell: no newlines, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}
