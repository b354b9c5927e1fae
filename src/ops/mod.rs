//! Use cases as library operations: what a command, a policy job (and later a runbook or a
//! drill) asks for, composed from the layers below (`repo`, `pg`, `aws`, `policy`, `store`).
//! Each module takes plain option structs, never command-line arguments, and returns a report
//! for its caller to print.
pub mod wal;
