//! A 4 GiB stream through `backup --stdin` and `restore --stdout` with bounded memory.

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::*;

const TOTAL: u64 = 4 * GIB;
/// Alternating 8 MiB regions of compressible text-like and incompressible random bytes.
const REGION: u64 = 8 * MIB;
const RSS_LIMIT_KIB: u64 = 256 * 1024;

#[test]
fn stream_4gib_backup_and_restore_with_bounded_memory() {
    let ws = Workspace::new();
    let repo = ws.repo();
    repo.init();
    let seed = 0x5EED_4000;

    // Backup: feed the generated stream from a thread, hashing it on the way.
    let t0 = Instant::now();
    let mut run = repo
        .cmd("backup")
        .args(["--stdin", "--stdin-name", "big.bin", "--json"])
        .stdin_piped()
        .timeout(Duration::from_secs(1200))
        .spawn();
    let sampler = HwmSampler::start(run.pid());
    let mut stdin = run.child.stdin.take().unwrap();
    let writer = thread::spawn(move || -> Result<(blake3::Hash, u64), (std::io::Error, u64)> {
        let mut g = DataGen::mixed(seed, REGION);
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; MIB as usize];
        let mut sent = 0u64;
        while sent < TOTAL {
            let n = (TOTAL - sent).min(buf.len() as u64) as usize;
            g.fill(&mut buf[..n]);
            h.update(&buf[..n]);
            stdin.write_all(&buf[..n]).map_err(|e| (e, sent))?;
            sent += n as u64;
        }
        drop(stdin); // EOF
        Ok((h.finalize(), sent))
    });
    let out = run.finish();
    let hwm = sampler.stop();
    let written = writer.join().unwrap();
    eprintln!(
        "backup of {} took {:.1?}: peak RSS {} MiB (wait4 ru_maxrss), {} MiB (sampled VmHWM); test process RSS/HWM {:?} KiB",
        fmt_bytes(TOTAL),
        t0.elapsed(),
        out.max_rss_kib / 1024,
        hwm / 1024,
        self_rss_kib()
    );
    out.ok();
    let (hash_in, sent) = match written {
        Ok(v) => v,
        Err((e, sent)) => panic!("writing the stream failed after {sent} bytes: {e}\n{out}"),
    };
    assert_eq!(sent, TOTAL);
    let b = BackupInfo::parse(&out);
    assert_eq!(b.logical_bytes, TOTAL, "logical_bytes of the stream\n{out}");
    // Half the stream is text-like: it must have been compressed, the random half cannot.
    assert!(
        b.stored_bytes < TOTAL * 9 / 10 && b.stored_bytes > TOTAL / 2,
        "stored_bytes={} for a 4 GiB half-compressible stream\n{out}",
        b.stored_bytes
    );
    assert!(
        out.max_rss_kib < RSS_LIMIT_KIB,
        "backup --stdin peak RSS {} MiB >= 256 MiB (test process RSS/HWM {:?} KiB)\n{out}",
        out.max_rss_kib / 1024,
        self_rss_kib()
    );

    // Restore to stdout, hashing on the way.
    let t1 = Instant::now();
    let mut run =
        repo.cmd("restore").args(["latest", "--stdout"]).stream_stdout().timeout(Duration::from_secs(1200)).spawn();
    let sampler = HwmSampler::start(run.pid());
    let mut stdout = run.child.stdout.take().unwrap();
    let reader = thread::spawn(move || -> std::io::Result<(blake3::Hash, u64)> {
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; MIB as usize];
        let mut n = 0u64;
        loop {
            let k = stdout.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        Ok((h.finalize(), n))
    });
    let r = run.finish();
    let hwm = sampler.stop();
    let (hash_out, received) = reader.join().unwrap().expect("reading restore --stdout");
    eprintln!(
        "restore of {} took {:.1?}: peak RSS {} MiB (wait4 ru_maxrss), {} MiB (sampled VmHWM); test process RSS/HWM {:?} KiB",
        fmt_bytes(received),
        t1.elapsed(),
        r.max_rss_kib / 1024,
        hwm / 1024,
        self_rss_kib()
    );
    r.ok();
    assert_eq!(received, TOTAL, "restore --stdout returned {received} bytes, expected {TOTAL}\n{r}");
    assert_eq!(hash_out, hash_in, "restored stream differs from the backed-up stream (BLAKE3)\n{r}");
    assert!(
        r.max_rss_kib < RSS_LIMIT_KIB,
        "restore --stdout peak RSS {} MiB >= 256 MiB (test process RSS/HWM {:?} KiB)\n{r}",
        r.max_rss_kib / 1024,
        self_rss_kib()
    );
}
