//! WAL file names as PostgreSQL's archiver hands them to `archive_command` and asks for them in
//! `restore_command`: segments (`TTTTTTTTXXXXXXXXYYYYYYYY`, 24 hex digits: timeline, log, segment),
//! `.partial` segments left at a timeline switch, timeline history files (`TTTTTTTT.history`) and
//! backup history files (`<segment>.XXXXXXXX.backup`).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalKind {
    Segment,
    Partial,
    History,
    BackupHistory,
}

/// A validated WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalName(String);

fn is_upper_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalName {
    /// Accepts exactly the names PostgreSQL archives; anything else (a path, a lowercase or
    /// truncated name) is refused, so a bad `%f`/`%p` never becomes a store key.
    pub fn parse(name: &str) -> Option<WalName> {
        let ok = match name.len() {
            24 => is_upper_hex(name),
            32 => name.ends_with(".partial") && is_upper_hex(&name[..24]),
            16 => name.ends_with(".history") && is_upper_hex(&name[..8]),
            40 => {
                name.ends_with(".backup")
                    && is_upper_hex(&name[..24])
                    && &name[24..25] == "."
                    && is_upper_hex(&name[25..33])
            }
            _ => false,
        };
        ok.then(|| WalName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> WalKind {
        match self.0.len() {
            24 => WalKind::Segment,
            32 => WalKind::Partial,
            16 => WalKind::History,
            _ => WalKind::BackupHistory,
        }
    }

    /// The timeline the file belongs to (its first 8 hex digits).
    pub fn timeline(&self) -> u32 {
        u32::from_str_radix(&self.0[..8], 16).expect("validated hex")
    }

    /// The segment number within its timeline (log * segments-per-log + seg), for segment-like
    /// names; `segments_per_log` is 0x100000000 / segment size (256 for 16 MiB segments).
    pub fn segment_number(&self, segments_per_log: u64) -> Option<u64> {
        if self.kind() == WalKind::History {
            return None;
        }
        let log = u64::from_str_radix(&self.0[8..16], 16).expect("validated hex");
        let seg = u64::from_str_radix(&self.0[16..24], 16).expect("validated hex");
        Some(log * segments_per_log + seg)
    }
}

/// Parses an LSN as PostgreSQL prints it ("16/B374D848"): two halves of 1 to 8 hex digits
/// each. A longer half is refused, not folded into the other (a bare `<< 32` would).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let half = |h: &str| {
        let hex = (1..=8).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| u32::from_str_radix(h, 16).ok()).flatten()
    };
    Some((u64::from(half(hi)?) << 32) | u64::from(half(lo)?))
}

/// Where a timeline history file says its timeline begins: the parent timeline and the WAL
/// position it leaves it at, from its last entry ("1\t0/3000060\tno recovery target specified").
pub fn fork_point(history: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(history).ok()?;
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with('#'))?;
    let mut fields = line.split_whitespace();
    Some((fields.next()?.parse().ok()?, parse_lsn(fields.next()?)?))
}

/// Prints a WAL position as PostgreSQL does ("16/B374D848").
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The name of segment number `segno` on `timeline` for segments of `segment_size` bytes.
pub fn segment_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per_log = 0x1_0000_0000 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_as_postgresql_prints_them_and_nothing_longer() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in ["0/300022222100", "100000000/0", "+1/2", "1/-2", "/1", "1/", "1", "g/1", "1/2/3"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_postgres_archives_are_accepted_and_nothing_else() {
        let cases = [
            ("000000010000000000000002", Some(WalKind::Segment)),
            ("00000002000000000000000A.partial", Some(WalKind::Partial)),
            ("00000002.history", Some(WalKind::History)),
            ("000000010000000000000002.00000028.backup", Some(WalKind::BackupHistory)),
            ("00000001000000000000000a", None),
            ("pg_wal/000000010000000000000002", None),
            ("../00000001000000000000002", None),
            ("0000000100000000000000020", None),
            ("0000000G.history", None),
            ("", None),
        ];
        for (name, kind) in cases {
            assert_eq!(WalName::parse(name).map(|n| n.kind()), kind, "{name}");
        }
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(segment_name(1, parse_lsn("0/2000100").unwrap() / (16 << 20), 16 << 20), "000000010000000000000002");
        assert_eq!(segment_name(2, 0x1FF, 1 << 20), "0000000200000000000001FF");
        assert_eq!(segment_name(1, 0x100, 16 << 20), "000000010000000100000000");
        assert_eq!(
            fork_point(b"1\t0/3000060\tno recovery target specified\n\n2\t0/50000A0\tat restore point\n"),
            Some((2, 0x50000A0))
        );
        assert_eq!(fork_point(b"# comment only\n"), None);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        let n = WalName::parse("0000000300000001000000FE").unwrap();
        assert_eq!(n.timeline(), 3);
        assert_eq!(n.segment_number(256), Some(256 + 0xFE));
    }
}
