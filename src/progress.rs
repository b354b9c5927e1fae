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

/// Byte counts for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
