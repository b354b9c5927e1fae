//! The report as one self-contained HTML file: inline CSS and SVG charts, no script, no external
//! asset, so it opens the same offline, in a mail attachment or an auditor's archive.

use std::fmt::Write;

use super::{Report, Status, charts, minute, seal, span};

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1000px;\
color:#212121;padding:0 1em}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em}table{border-collapse:collapse;\
width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top;font-size:.9em}\
.s{font-weight:600;white-space:nowrap}.PASS{color:#2e7d32}.FAIL{color:#c62828}.NO-EVIDENCE{color:#757575}\
.summary span{display:inline-block;margin-right:1.5em;font-size:1.2em}details{margin:.4em 0}summary{cursor:pointer}\
ul{margin:.3em 0 .6em 1.2em;padding:0;font-size:.85em}.chart{margin:.5em 0 1em 0}footer{margin-top:2em;\
font-size:.75em;color:#757575;word-break:break-all}";

pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let title = format!("DR compliance report: {} — {}", r.policy, r.period.label);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style>\
         </head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let _ = writeln!(
        h,
        "<p>Period {} to {} UTC, judged as of {} UTC. Policy <code>{}</code> ({}); primary repository \
         <code>{}</code> (id {}). Targets: RTO {}, RPO {}. drctl {}.</p>",
        minute(r.period.from),
        minute(r.period.to),
        minute(r.as_of),
        escape(&r.policy),
        escape(&r.kind),
        escape(&r.repository.location),
        escape(&r.repository.id[..16]),
        span(r.targets.rto_seconds),
        span(r.targets.rpo_seconds),
        escape(&r.drctl_version)
    );
    let _ = write!(
        h,
        "<p class=\"summary\"><span class=\"PASS\">{} PASS</span><span class=\"FAIL\">{} FAIL</span>\
         <span class=\"NO-EVIDENCE\">{} NO-EVIDENCE</span></p>\n<table><tr><th>Status</th><th>Control</th>\
         <th>Finding</th></tr>\n",
        r.summary.pass, r.summary.fail, r.summary.no_evidence
    );
    for c in &r.controls {
        let _ = writeln!(
            h,
            "<tr><td class=\"s {}\">{}</td><td>{}</td><td>{}</td></tr>",
            c.status.as_str(),
            c.status.as_str(),
            escape(&c.title),
            escape(&c.finding)
        );
    }
    h.push_str("</table>\n<h2>Backups</h2>\n");
    h.push_str(&charts::heatmap(&r.series, &r.period, r.as_of));
    h.push_str(&charts::sizes(&r.series, &r.period, r.as_of));
    if let Some(wal) = &r.series.wal {
        h.push_str("<h2>Point-in-time recovery coverage</h2>\n");
        h.push_str(&charts::wal_bar(wal, &r.period));
    }
    for copy in &r.series.copies {
        let _ = writeln!(h, "<h2>Copy lag: {}</h2>", escape(&copy.repository));
        h.push_str(&charts::copy_lag(copy, &r.period, r.as_of));
    }
    if !r.series.drills.is_empty() {
        h.push_str("<h2>Drills</h2>\n");
        h.push_str(&charts::drills(&r.series.drills, &r.targets));
    }
    h.push_str("<h2>Controls and evidence</h2>\n");
    for c in &r.controls {
        let _ = write!(
            h,
            "<details{}><summary><span class=\"s {}\">{}</span> {} — {}</summary><p><code>{}</code></p><ul>",
            if c.status == Status::Fail { " open" } else { "" },
            c.status.as_str(),
            c.status.as_str(),
            escape(&c.title),
            escape(&c.finding),
            escape(&c.id)
        );
        for e in &c.evidence {
            let _ = write!(h, "<li>{}</li>", escape(e));
        }
        h.push_str("</ul></details>\n");
    }
    let _ = write!(
        h,
        "<footer>Built by drctl from the evidence in the repositories. <code>drctl report verify FILE</code> checks \
         this seal: <code>{}</code></footer>\n</body></html>\n",
        seal::PLACEHOLDER
    );
    h
}

/// Text safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
