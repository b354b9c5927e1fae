//! End-to-end benchmark: drctl against a peer pipeline (`tar | zstd -3 -T0 | openssl enc`).
//!
//! Run with `cargo bench --bench repo` (as root, so the page cache can be dropped between
//! phases). It generates two data sets in a temporary directory, backs each up with drctl into a
//! fresh repository, restores it, backs it up again unchanged (dedup), runs the peer pipeline and
//! its restore on the same data, and prints per-phase wall time, throughput, peak RSS and stored
//! bytes, then a markdown summary.
//!
//! Environment:
//! - `DRCTL_BENCH_GIB`: size of each data set in GiB (fractions allowed; default 1).
//! - `DRCTL_BENCH_DIR`: parent of the scratch directory (default: the system temp dir, /tmp).
//! - `DRCTL_BENCH_KEEP=1`: keep the scratch directory instead of deleting it.
//!
//! Both tools' timings include making their output durable: drctl fsyncs every pack it writes
//! and syncfs's a restored tree before moving it into place, so the peer's backup is followed by
//! `sync OUT` and its restore by `sync -f DIR`, timed and added to the pipeline's wall time (the
//! pipeline-only time is printed too).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const DRCTL: &str = env!("CARGO_BIN_EXE_drctl");
const PASSWORD: &str = "drctl-bench-passphrase";
const MIB: f64 = 1024.0 * 1024.0;

// ---------------------------------------------------------------------------------------------
// Deterministic data generation
// ---------------------------------------------------------------------------------------------

/// splitmix64: fast, deterministic, good enough to defeat compression on the random half.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut r = Rng(seed ^ 0x5851_F42D_4C95_7F2D);
        r.next();
        r
    }
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Text generator: log-like lines of a 6-digit number, one of a few level/component prefixes and
/// 4-11 words drawn with a skewed distribution from a 256-word vocabulary. zstd -3 compresses it
/// about 3.7x.
struct TextGen {
    vocab: Vec<Vec<u8>>,
}

const PREFIXES: [&[u8]; 4] = [b"INFO  worker ", b"DEBUG worker ", b"WARN  scheduler ", b"INFO  http "];

impl TextGen {
    fn new() -> Self {
        let mut r = Rng::new(42);
        let vocab = (0..256)
            .map(|_| {
                let len = 2 + (r.next() % 9) as usize;
                (0..len).map(|_| b'a' + (r.next() % 26) as u8).collect()
            })
            .collect();
        TextGen { vocab }
    }

    /// Replaces `buf` with exactly `n` bytes of text.
    fn fill(&self, buf: &mut Vec<u8>, n: usize, r: &mut Rng) {
        buf.clear();
        buf.reserve(n + 256);
        while buf.len() < n {
            let mut x = r.next();
            let mut num = x % 1_000_000;
            let mut digits = [b'0'; 6];
            for d in digits.iter_mut().rev() {
                *d = b'0' + (num % 10) as u8;
                num /= 10;
            }
            buf.extend_from_slice(&digits);
            buf.push(b' ');
            buf.extend_from_slice(PREFIXES[((x >> 40) & 3) as usize]);
            x = r.next();
            let words = 4 + (x & 7) as usize;
            x >>= 3;
            for i in 0..words {
                if i % 3 == 2 {
                    x = r.next();
                }
                // The product of two uniform bytes skews the choice toward low indexes.
                let idx = (((x & 255) * ((x >> 8) & 255)) >> 8) as usize;
                buf.extend_from_slice(&self.vocab[idx]);
                buf.push(b' ');
                x >>= 16;
            }
            buf.push(b'\n');
        }
        buf.truncate(n);
    }
}

fn fill_random(buf: &mut Vec<u8>, n: usize, r: &mut Rng) {
    buf.clear();
    buf.reserve(n + 8);
    while buf.len() < n {
        buf.extend_from_slice(&r.next().to_le_bytes());
    }
    buf.truncate(n);
}

#[derive(Clone, Copy, PartialEq)]
enum Content {
    Text,
    Random,
}

/// Writes one file of `size` bytes, seeded by `seed`.
fn write_file(path: &Path, size: u64, content: Content, seed: u64, text: &TextGen, buf: &mut Vec<u8>) {
    const BLOCK: u64 = 4 << 20;
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut r = Rng::new(seed);
    let mut left = size;
    while left > 0 {
        let n = left.min(BLOCK) as usize;
        match content {
            Content::Text => text.fill(buf, n, &mut r),
            Content::Random => fill_random(buf, n, &mut r),
        }
        f.write_all(buf).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
}

/// A few big files holding 70% of `total` and `small_count` files (log-uniform sizes, 4 KiB to
/// 4 MiB before scaling) holding the rest, spread over 10 subdirectories. Returns bytes written.
fn write_layout(dir: &Path, total: u64, small_count: usize, big_count: usize, content: Content, seed: u64) -> u64 {
    fs::create_dir_all(dir).unwrap();
    let text = TextGen::new();
    let mut buf = Vec::new();
    let mut sizes = Rng::new(seed ^ 0xA5A5);

    let big_total = total * 7 / 10;
    // Unequal big files: weights 1.5, 1.25, 1.0, ... (about 287, 236 and 194 MiB at 1 GiB).
    let weights: Vec<f64> = (0..big_count).map(|i| 1.5 - 0.25 * i as f64).map(|w| w.max(0.5)).collect();
    let wsum: f64 = weights.iter().sum();
    let mut written = 0u64;
    let mut big_left = big_total;
    for (i, w) in weights.iter().enumerate() {
        let size = if i + 1 == big_count { big_left } else { (big_total as f64 * w / wsum) as u64 };
        big_left -= size;
        write_file(
            &dir.join(format!("big-{i}.dat")),
            size,
            content,
            seed.wrapping_mul(1000) + i as u64,
            &text,
            &mut buf,
        );
        written += size;
    }

    let small_total = total - big_total;
    let raw: Vec<f64> = (0..small_count)
        .map(|_| {
            let u = (sizes.next() >> 11) as f64 / (1u64 << 53) as f64;
            (4096.0f64.ln() + u * ((4u64 << 20) as f64 / 4096.0).ln()).exp()
        })
        .collect();
    let raw_sum: f64 = raw.iter().sum();
    let mut small_left = small_total;
    for (i, s) in raw.iter().enumerate() {
        let size =
            if i + 1 == small_count { small_left } else { ((small_total as f64 * s / raw_sum) as u64).min(small_left) };
        small_left -= size;
        let sub = dir.join(format!("d{:02}", i % 10));
        fs::create_dir_all(&sub).unwrap();
        let ext = if content == Content::Text { "log" } else { "bin" };
        write_file(
            &sub.join(format!("f{i:04}.{ext}")),
            size,
            content,
            seed.wrapping_mul(1000) + 100 + i as u64,
            &text,
            &mut buf,
        );
        written += size;
    }
    written
}

// ---------------------------------------------------------------------------------------------
// Measuring child processes
// ---------------------------------------------------------------------------------------------

struct Measured {
    wall: f64,
    max_rss_kib: u64,
    stdout: String,
}

/// Runs `cmd` to completion, reaping it with wait4 to get its peak RSS. On Linux, the ru_maxrss
/// wait4 reports for a child is the max over the child and all descendants it waited for, so for
/// `bash -c 'a | b | c'` it covers every stage of the pipeline.
fn run_measured(mut cmd: Command, what: &str, stderr_path: &Path) -> Measured {
    let stderr = File::create(stderr_path).unwrap();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(stderr));
    // Die with the bench instead of running on if it is interrupted.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let rc = loop {
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break rc;
    };
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(rc, pid, "{what}: wait4 failed: {}", std::io::Error::last_os_error());
    std::mem::forget(child); // already reaped
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let err = fs::read_to_string(stderr_path).unwrap_or_default();
        panic!("{what} failed (wait status {status:#x})\nstdout:\n{stdout}\nstderr:\n{err}");
    }
    Measured { wall, max_rss_kib: usage.ru_maxrss as u64, stdout }
}

fn drctl(args: &[&str]) -> Command {
    let mut cmd = Command::new(DRCTL);
    cmd.args(args).env("DRCTL_PASSWORD", PASSWORD).env("DRCTL_LOG_FORMAT", "text").env_remove("RUST_LOG");
    cmd
}

fn bash(script: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["-o", "pipefail", "-c", script]);
    cmd
}

/// Quotes a path for a bash script.
fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Flushes dirty data and drops the page cache; false when that is not permitted.
fn drop_caches() -> bool {
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Apparent size of every regular file under `path`.
fn tree_bytes(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        fs::read_dir(path).unwrap().map(|e| tree_bytes(&e.unwrap().path())).sum()
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

fn json_u64(json: &str, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("bad JSON {json:?}: {e}"));
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {json}"))
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

struct Row {
    tool: &'static str,
    phase: &'static str,
    wall: f64,
    bytes: u64,
    rss_kib: u64,
    stored: Option<u64>,
    note: String,
}

impl Row {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.max(1e-9)
    }
}

struct SetResult {
    name: &'static str,
    logical: u64,
    files: u64,
    rows: Vec<Row>,
    cold: bool,
}

impl SetResult {
    fn row(&self, tool: &str, phase: &str) -> &Row {
        self.rows.iter().find(|r| r.tool == tool && r.phase == phase).unwrap()
    }
    fn ratios(&self) -> (f64, f64, f64) {
        let backup = self.row("drctl", "backup").mbps() / self.row("peer", "backup").mbps();
        let restore = self.row("drctl", "restore").mbps() / self.row("peer", "restore").mbps();
        let stored =
            self.row("drctl", "backup").stored.unwrap() as f64 / self.row("peer", "backup").stored.unwrap() as f64;
        (backup, restore, stored)
    }
}

fn count_files(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_dir() { fs::read_dir(path).unwrap().map(|e| count_files(&e.unwrap().path())).sum() } else { 1 }
}

fn bench_set(name: &'static str, root: &Path, data: &Path, logs: &Path) -> SetResult {
    let mut rows = Vec::new();
    let mut cold = true;
    let logical = tree_bytes(data);
    let files = count_files(data);
    let log = |phase: &str| logs.join(format!("{name}-{phase}.stderr"));
    let data_s = data.to_str().unwrap();

    // a. drctl backup into a fresh repository.
    let repo = root.join("repo");
    let repo_s = repo.to_str().unwrap();
    run_measured(drctl(&["init", "--repo", repo_s]), "drctl init", &log("init"));
    cold &= drop_caches();
    let m =
        run_measured(drctl(&["backup", "--repo", repo_s, "--path", data_s, "--json"]), "drctl backup", &log("backup"));
    let reported = json_u64(&m.stdout, "logical_bytes");
    assert_eq!(reported, logical, "drctl backed up {reported} bytes, the data set holds {logical}");
    let stored_json = json_u64(&m.stdout, "stored_bytes");
    let repo_bytes = tree_bytes(&repo);
    eprintln!("  drctl backup: {:.2} s", m.wall);
    rows.push(Row {
        tool: "drctl",
        phase: "backup",
        wall: m.wall,
        bytes: logical,
        rss_kib: m.max_rss_kib,
        stored: Some(repo_bytes),
        note: format!("repository on disk; snapshot reports {:.1} MiB stored", stored_json as f64 / MIB),
    });

    // b. drctl restore into a new directory, then verify it.
    let restored = root.join("restore-drctl");
    cold &= drop_caches();
    let m = run_measured(
        drctl(&["restore", "--repo", repo_s, "latest", "--to", restored.to_str().unwrap()]),
        "drctl restore",
        &log("restore"),
    );
    eprintln!("  drctl restore: {:.2} s", m.wall);
    rows.push(Row {
        tool: "drctl",
        phase: "restore",
        wall: m.wall,
        bytes: logical,
        rss_kib: m.max_rss_kib,
        stored: None,
        note: String::new(),
    });
    // Paths are stored absolute: the tree comes back under TARGET/<DATA without its leading '/'>.
    let restored_data = restored.join(data.strip_prefix("/").unwrap());
    let diff = Command::new("diff").arg("-r").arg("-q").arg(data).arg(&restored_data).output().unwrap();
    if !diff.status.success() {
        panic!(
            "RESTORE MISMATCH for data set {name}: diff -r -q {} {} exited {}\n{}{}",
            data.display(),
            restored_data.display(),
            diff.status,
            String::from_utf8_lossy(&diff.stdout),
            String::from_utf8_lossy(&diff.stderr)
        );
    }
    eprintln!("  verified: diff -r -q source restored: identical");
    fs::remove_dir_all(&restored).unwrap();

    // c. Second backup of the unchanged data: everything deduplicates.
    cold &= drop_caches();
    let m = run_measured(
        drctl(&["backup", "--repo", repo_s, "--path", data_s, "--json"]),
        "drctl backup (2nd)",
        &log("backup2"),
    );
    let new_stored = json_u64(&m.stdout, "stored_bytes");
    let growth = tree_bytes(&repo) - repo_bytes;
    eprintln!("  drctl backup (unchanged): {:.2} s", m.wall);
    rows.push(Row {
        tool: "drctl",
        phase: "backup unchanged",
        wall: m.wall,
        bytes: logical,
        rss_kib: m.max_rss_kib,
        stored: Some(new_stored),
        note: format!("new stored bytes; repository grew {growth} B"),
    });
    fs::remove_dir_all(&repo).unwrap();

    // d. Peer pipeline: tar | zstd -3 -T0 | openssl enc, then its restore.
    let out = root.join("peer.tar.zst.enc");
    cold &= drop_caches();
    let script = format!(
        "tar -cf - -C {} . | zstd -3 -T0 -q | openssl enc -aes-256-cbc -pbkdf2 -pass pass:x > {}",
        q(data),
        q(&out)
    );
    let m = run_measured(bash(&script), "peer backup", &log("peer-backup"));
    let s = run_measured(bash(&format!("sync {}", q(&out))), "sync", &log("peer-sync"));
    let out_bytes = fs::metadata(&out).unwrap().len();
    eprintln!("  peer backup: {:.2} s + sync {:.2} s", m.wall, s.wall);
    rows.push(Row {
        tool: "peer",
        phase: "backup",
        wall: m.wall + s.wall,
        bytes: logical,
        rss_kib: m.max_rss_kib,
        stored: Some(out_bytes),
        note: format!("pipeline {:.2} s + sync {:.2} s", m.wall, s.wall),
    });

    let restored = root.join("restore-peer");
    fs::create_dir(&restored).unwrap();
    cold &= drop_caches();
    let script = format!(
        "openssl enc -d -aes-256-cbc -pbkdf2 -pass pass:x -in {} | zstd -d -T0 -q | tar -xf - -C {}",
        q(&out),
        q(&restored)
    );
    let m = run_measured(bash(&script), "peer restore", &log("peer-restore"));
    let s = run_measured(bash(&format!("sync -f {}", q(&restored))), "sync", &log("peer-sync"));
    eprintln!("  peer restore: {:.2} s + sync {:.2} s", m.wall, s.wall);
    rows.push(Row {
        tool: "peer",
        phase: "restore",
        wall: m.wall + s.wall,
        bytes: logical,
        rss_kib: m.max_rss_kib,
        stored: None,
        note: format!("pipeline {:.2} s + sync {:.2} s", m.wall, s.wall),
    });
    let restored_bytes = tree_bytes(&restored);
    assert_eq!(restored_bytes, logical, "the peer restore holds {restored_bytes} bytes, the data set {logical}");
    fs::remove_dir_all(&restored).unwrap();
    fs::remove_file(&out).unwrap();

    SetResult { name, logical, files, rows, cold }
}

fn print_table(r: &SetResult) {
    println!();
    println!(
        "== data set: {} ({:.1} MiB in {} files, {} cache) ==",
        r.name,
        r.logical as f64 / MIB,
        r.files,
        if r.cold { "cold" } else { "WARM" }
    );
    println!(
        "{:<6} {:<17} {:>8} {:>8} {:>13} {:>11}  note",
        "tool", "phase", "wall s", "MB/s", "peak RSS MiB", "stored MiB"
    );
    for row in &r.rows {
        println!(
            "{:<6} {:<17} {:>8.2} {:>8.0} {:>13.1} {:>11}  {}",
            row.tool,
            row.phase,
            row.wall,
            row.mbps(),
            row.rss_kib as f64 / 1024.0,
            row.stored.map(|s| format!("{:.1}", s as f64 / MIB)).unwrap_or_else(|| "-".into()),
            row.note
        );
    }
    let (b, rs, st) = r.ratios();
    println!("ratios drctl/peer: backup throughput {b:.2}x, restore throughput {rs:.2}x, stored bytes {st:.2}x");
}

fn markdown(results: &[SetResult], gib: f64, env_line: &str) -> String {
    let mut s = String::new();
    writeln!(s, "### drctl vs tar|zstd -3 -T0|openssl enc ({gib} GiB per data set)").unwrap();
    writeln!(s).unwrap();
    writeln!(s, "{env_line}").unwrap();
    writeln!(s).unwrap();
    writeln!(s, "| data set | tool | phase | wall s | MB/s | peak RSS MiB | stored MiB |").unwrap();
    writeln!(s, "|---|---|---|--:|--:|--:|--:|").unwrap();
    for r in results {
        for row in &r.rows {
            writeln!(
                s,
                "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {} |",
                r.name,
                row.tool,
                row.phase,
                row.wall,
                row.mbps(),
                row.rss_kib as f64 / 1024.0,
                row.stored.map(|v| format!("{:.1}", v as f64 / MIB)).unwrap_or_else(|| "-".into())
            )
            .unwrap();
        }
    }
    writeln!(s).unwrap();
    writeln!(s, "| data set | backup MB/s drctl/peer | restore MB/s drctl/peer | stored bytes drctl/peer |").unwrap();
    writeln!(s, "|---|--:|--:|--:|").unwrap();
    for r in results {
        let (b, rs, st) = r.ratios();
        writeln!(s, "| {} | {b:.2}x | {rs:.2}x | {st:.2}x |", r.name).unwrap();
    }
    writeln!(s).unwrap();
    writeln!(
        s,
        "MB/s = logical bytes (10^6) / wall. drctl stored = repository bytes after the first backup; \
         \"backup unchanged\" stored = new bytes the second backup wrote. Peer times include a final \
         sync (drctl fsyncs packs and syncfs's restores). Peak RSS = ru_maxrss from wait4 (max over the \
         peer pipeline's processes); drctl's includes the 64 MiB argon2 unlock."
    )
    .unwrap();
    s
}

/// CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq) since boot.
fn machine_cpu_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    if fields.len() < 7 {
        return f64::NAN;
    }
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / ticks
}

/// CPU seconds this bench and the processes it waited for have used.
fn own_cpu_seconds() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        for t in [u.ru_utime, u.ru_stime] {
            total += t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        }
    }
    total
}

fn tool_version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Deletes the scratch directory however the bench ends.
struct Scratch(PathBuf, bool);

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.1 {
            eprintln!("kept scratch directory {}", self.0.display());
        } else if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to select, so arguments are ignored.
    let gib: f64 = match std::env::var("DRCTL_BENCH_GIB") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("DRCTL_BENCH_GIB={v:?} is not a number")),
        Err(_) => 1.0,
    };
    assert!(gib > 0.0 && gib.is_finite(), "DRCTL_BENCH_GIB must be positive");
    let total = (gib * (1u64 << 30) as f64) as u64;
    let parent = std::env::var_os("DRCTL_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&parent).unwrap();
    let parent = fs::canonicalize(&parent).unwrap();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let scratch_dir = parent.join(format!("drctl-bench-{}-{stamp}", std::process::id()));
    fs::create_dir(&scratch_dir).unwrap();
    let keep = std::env::var("DRCTL_BENCH_KEEP").is_ok_and(|v| v == "1");
    let scratch = Scratch(scratch_dir, keep);
    let logs = scratch.0.join("logs");
    fs::create_dir(&logs).unwrap();

    for tool in ["bash", "tar", "zstd", "openssl", "diff", "sync"] {
        let found =
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
        assert!(found, "the bench needs `{tool}` on PATH");
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let env_line = format!(
        "{cpus} CPUs; {}; {}; {}; drctl {}",
        tool_version("uname", "-sr"),
        tool_version("zstd", "-V")
            .split_whitespace()
            .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
            .map(|v| format!("zstd {}", v.trim_end_matches(',')))
            .unwrap_or_else(|| "zstd ?".into()),
        tool_version("openssl", "version").split_whitespace().take(2).collect::<Vec<_>>().join(" "),
        tool_version(DRCTL, "--version").trim_start_matches("drctl ")
    );
    let (machine_start, own_start, run_start) = (machine_cpu_seconds(), own_cpu_seconds(), Instant::now());
    eprintln!("drctl bench: {gib} GiB per data set in {} ({env_line})", scratch.0.display());

    let mut results = Vec::new();
    for name in ["compressible", "mixed"] {
        let root = scratch.0.join(name);
        let data = root.join("data");
        let started = Instant::now();
        let written = match name {
            "compressible" => write_layout(&data, total, 300, 3, Content::Text, 1),
            _ => {
                let half = total / 2;
                write_layout(&data.join("text"), half, 150, 3, Content::Text, 2)
                    + write_layout(&data.join("random"), total - half, 150, 2, Content::Random, 3)
            }
        };
        assert_eq!(written, total);
        eprintln!("{name}: generated {:.1} MiB in {:.1} s", written as f64 / MIB, started.elapsed().as_secs_f64());
        let result = bench_set(name, &root, &data, &logs);
        print_table(&result);
        results.push(result);
        fs::remove_dir_all(&root).unwrap();
    }

    if results.iter().any(|r| !r.cold) {
        println!("\nNOTE: warm cache: dropping the page cache failed (not root?); reads may have come from memory.");
    }
    // CPU time the machine spent on anything but this bench (other users' work, and kernel
    // threads such as writeback, some of which this bench causes).
    let other = (machine_cpu_seconds() - machine_start) - (own_cpu_seconds() - own_start);
    let share = other / (run_start.elapsed().as_secs_f64() * cpus.max(1) as f64);
    let busy = share > 0.05;
    let env_line = format!(
        "{env_line}; other work used {:.0}% of the CPUs during the run{}",
        share * 100.0,
        if busy { " (BUSY: numbers are noisy, rerun on a quiet machine)" } else { "" }
    );
    if busy {
        println!(
            "\nNOTE: other processes used {other:.1} CPU s ({:.0}% of the machine) during the run; numbers are noisy.",
            share * 100.0
        );
    }
    println!("\n{}", markdown(&results, gib, &env_line));
    drop(scratch);
}
