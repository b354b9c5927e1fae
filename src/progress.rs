//! Progress reporting as a trait: the library reports, the command line decides how to show it
//! (a bar on a terminal, nothing in a pipe or a container log).

pub trait Progress: Send + Sync {
    /// A new phase begins; `total` bytes when known.
    fn start(&self, label: &str, total: Option<u64>);
    /// `bytes` more were processed.
    fn add(&self, bytes: u64);
    fn finish(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn add(&self, _: u64) {}
    fn finish(&self) {}
}
