//! Amazon Web Services beyond storage: RDS snapshots of `kind: rds` policies.

pub mod rds;
