//! Route 53 in a region failover: the service's name pointed at the other region with an UPSERT
//! (which creates or replaces, so repeating it is harmless), waited on until Route 53 reports the
//! change `INSYNC` on its name servers. Resolvers that cached the old answer keep it for the old
//! record's TTL, so callers wait that out too.
//!
//! Route 53 is global (its API lives in us-east-1); `AWS_ENDPOINT_URL_ROUTE_53` points the client
//! at a compatible service.

use std::time::{Duration, Instant};

use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};

/// How often a pending change is looked at again (Route 53 usually syncs within a minute).
const POLL: Duration = Duration::from_secs(5);

/// Why a Route 53 call failed: the cause and the fix.
#[derive(Debug, thiserror::Error)]
#[error("Route 53 {what}: {detail}")]
pub struct DnsError {
    pub what: String,
    pub detail: String,
}

/// A record set as found.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub ttl: Option<i64>,
    pub values: Vec<String>,
}

impl Record {
    /// Whether the record answers exactly `value` (names compared as DNS does: any case, with or
    /// without the final dot).
    pub fn points_at(&self, value: &str) -> bool {
        matches!(self.values.as_slice(), [only] if same_name(only, value))
    }
}

pub struct Dns {
    client: aws_sdk_route53::Client,
    runtime: tokio::runtime::Runtime,
}

impl Dns {
    /// A client. Makes no call.
    pub fn connect() -> Result<Dns, DnsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DnsError { what: "setup".into(), detail: format!("cannot start the I/O runtime: {e}") })?;
        let shared = super::sdk::load(&runtime, Some("us-east-1"));
        Ok(Dns { client: aws_sdk_route53::Client::new(&shared), runtime })
    }

    /// The record `name` of `kind` in hosted zone `zone`, if there is one.
    pub fn record(&self, zone: &str, name: &str, kind: &str) -> Result<Option<Record>, DnsError> {
        let what = format!("ListResourceRecordSets of {name} {kind} in zone {zone}");
        let request = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .start_record_name(name)
            .start_record_type(RrType::from(kind))
            .max_items(1);
        let out =
            self.runtime.block_on(request.send()).map_err(|e| explain(&what, "route53:ListResourceRecordSets", e))?;
        Ok(out
            .resource_record_sets()
            .iter()
            .find(|set| same_name(set.name(), name) && set.r#type().as_str() == kind)
            .map(|set| Record {
                ttl: set.ttl(),
                values: set.resource_records().iter().map(|r| r.value().to_string()).collect(),
            }))
    }

    /// Points `name` (`kind`, e.g. CNAME) at `value` with `ttl`; returns the change's id.
    pub fn upsert(&self, zone: &str, name: &str, kind: &str, value: &str, ttl: i64) -> Result<String, DnsError> {
        let what = format!("UPSERT of {name} {kind} -> {value} in zone {zone}");
        let fail = |detail: String| DnsError { what: what.clone(), detail };
        let record = ResourceRecord::builder().value(value).build().map_err(|e| fail(e.to_string()))?;
        let set = ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::from(kind))
            .ttl(ttl)
            .resource_records(record)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let change = Change::builder()
            .action(ChangeAction::Upsert)
            .resource_record_set(set)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let batch = ChangeBatch::builder()
            .comment("drctl dns.switch")
            .changes(change)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let request = self.client.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch);
        let out =
            self.runtime.block_on(request.send()).map_err(|e| explain(&what, "route53:ChangeResourceRecordSets", e))?;
        out.change_info().map(|c| c.id().to_string()).ok_or_else(|| fail("Route 53 returned no change id".into()))
    }

    /// Polls the change until Route 53 reports it `INSYNC`, for at most `limit`; returns how long
    /// that took.
    pub fn wait_insync(&self, change: &str, limit: Duration) -> Result<Duration, DnsError> {
        let started = Instant::now();
        let what = format!("change {change}");
        loop {
            let request = self.client.get_change().id(change);
            let out = self.runtime.block_on(request.send()).map_err(|e| explain(&what, "route53:GetChange", e))?;
            if out.change_info().map(|c| c.status()) == Some(&ChangeStatus::Insync) {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= limit {
                return Err(DnsError {
                    what,
                    detail: format!(
                        "still PENDING after {}: Route 53 may yet finish; see `aws route53 get-change`, then run again",
                        humantime::format_duration(Duration::from_secs(limit.as_secs()))
                    ),
                });
            }
            std::thread::sleep(POLL.min(limit.saturating_sub(started.elapsed())));
        }
    }
}

/// DNS names are equal in any case, with or without the final dot.
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

fn explain<E, R>(what: &str, permission: &str, err: SdkError<E, R>) -> DnsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let permissions = format!("{permission}; allow it in the role's IAM policy");
    let detail =
        super::explain(&err, "Route 53", "AWS_ENDPOINT_URL_ROUTE_53", &permissions, |code, cause| match code {
            "NoSuchHostedZone" => Some(format!("no such hosted zone ({cause}): give the zone's id (Z…), not its name")),
            "InvalidChangeBatch" | "InvalidInput" => {
                Some(format!("Route 53 refused the record ({cause}): check the name, type and value"))
            }
            "PriorRequestNotComplete" => Some(format!("an earlier change is still in progress ({cause}): run again")),
            _ => None,
        })
        .unwrap_or_else(|| format!("refused ({})", super::cause(&err)));
    DnsError { what: what.to_string(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_dns_does() {
        let record = Record { ttl: Some(300), values: vec!["api.us-west-2.example.com.".into()] };
        assert!(record.points_at("API.us-west-2.example.com"));
        assert!(!record.points_at("api.us-east-1.example.com"));
        let two = Record { ttl: Some(300), values: vec!["a.example.com".into(), "b.example.com".into()] };
        assert!(!two.points_at("a.example.com"));
    }
}
