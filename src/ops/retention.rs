//! Retention as one operation: forget the snapshots the rules do not keep and the WAL no kept
//! base backup needs, then prune the packs that freed. `drctl forget`, `drctl prune` and a
//! policy job all run it, so the order (lock, plan, apply, prune) lives here only.

use chrono::{Duration, Utc};

use crate::ops::Error;
use crate::repo::Repository;
use crate::repo::forget::{self, Applied, Plan};
use crate::repo::prune::{self, PruneReport};
use crate::repo::retention::Rules;

pub struct ForgetOptions<'a> {
    pub rules: &'a Rules,
    /// Judge only this policy's snapshots.
    pub policy: Option<&'a str>,
    /// Only plan (and, with `prune`, report what prune would delete).
    pub dry_run: bool,
    /// Prune afterwards, with this grace period.
    pub prune: Option<Duration>,
    /// Plan under a shared lock first, and take the exclusive lock only when something is to be
    /// removed or an earlier prune left packs marked; then prune only if snapshots went or packs
    /// are marked. A policy job runs often and mostly removes nothing: it should not turn a
    /// restore away for that.
    pub when_needed: bool,
}

/// What forget did: the plan, what was removed (none on a dry run or when nothing was to be),
/// and prune's report when it ran.
pub struct ForgetReport {
    pub plan: Plan,
    pub applied: Option<Applied>,
    pub prune: Option<PruneReport>,
}

/// Refuses rules that keep nothing but each source's newest snapshot; `drctl forget` checks
/// before it opens the repository.
pub fn check_rules(rules: &Rules) -> Result<(), Error> {
    if rules.is_empty() {
        return Err(Error::Usage(
            "no retention rule given: name at least one --keep-* option or --pitr-window (without one, every \
             snapshot but the newest would go)"
                .into(),
        ));
    }
    Ok(())
}

pub fn forget(repo: &Repository, options: &ForgetOptions) -> Result<ForgetReport, Error> {
    check_rules(options.rules)?;
    if options.when_needed {
        let first = {
            let _shared = repo.lock_shared("forget")?;
            forget::plan(repo, options.rules, Utc::now(), options.policy)?
        };
        let removes = first.snapshots.iter().any(|j| !j.verdict.keep) || !first.wal_to_remove.is_empty();
        if !removes && !prune::plan_pending(repo)? {
            return Ok(ForgetReport { plan: first, applied: None, prune: None });
        }
    }
    let lock = repo.lock_exclusive("forget")?;
    let plan = forget::plan(repo, options.rules, Utc::now(), options.policy)?;
    let applied = if options.dry_run { None } else { Some(forget::apply(repo, &plan)?) };
    let prune = match options.prune {
        Some(grace) => {
            let removed = applied.as_ref().is_some_and(|a| a.snapshots_removed > 0);
            if !options.when_needed || removed || prune::plan_pending(repo)? {
                Some(prune::prune(repo, &lock, grace, options.dry_run, Utc::now())?)
            } else {
                None
            }
        }
        None => None,
    };
    Ok(ForgetReport { plan, applied, prune })
}

/// One prune pass under its own exclusive lock.
pub fn prune(repo: &Repository, grace: Duration, dry_run: bool) -> Result<PruneReport, Error> {
    let lock = repo.lock_exclusive("prune")?;
    Ok(prune::prune(repo, &lock, grace, dry_run, Utc::now())?)
}
