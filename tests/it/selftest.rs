//! Sanity checks of the harness itself (generator, tree comparison), so that the drctl tests
//! cannot pass because of a blind comparator or a degenerate data generator.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::harness::*;

#[test]
fn generator_is_deterministic_and_position_independent() {
    let mut a = DataGen::mixed(7, 64 * KIB);
    let whole = a.take(3 * MIB as usize + 17);
    let mut b = DataGen::mixed(7, 64 * KIB);
    let mut pieces = Vec::new();
    let mut rng = Rng::new(1);
    while pieces.len() < whole.len() {
        let n = (rng.range(1, 100_000) as usize).min(whole.len() - pieces.len());
        pieces.extend_from_slice(&b.take(n));
    }
    assert!(whole == pieces, "generator output depends on how reads are split");
    let mut mid = vec![0u8; 1000];
    a.fill_at(MIB + 3, &mut mid);
    assert_eq!(&mid[..], &whole[(MIB + 3) as usize..(MIB + 1003) as usize]);
    let other = DataGen::mixed(8, 64 * KIB).take(4096);
    assert_ne!(&other[..], &whole[..4096], "different seeds must give different data");
}

#[test]
fn generator_text_compresses_and_random_does_not() {
    let text = DataGen::text(3).take(4 * MIB as usize);
    let random = DataGen::random(3).take(4 * MIB as usize);
    let ct = zstd::bulk::compress(&text, 3).unwrap().len();
    let cr = zstd::bulk::compress(&random, 3).unwrap().len();
    eprintln!("zstd-3: text 4 MiB -> {}, random 4 MiB -> {}", fmt_bytes(ct as u64), fmt_bytes(cr as u64));
    assert!(ct * 2 < text.len(), "text-like data should compress at least 2x, got {ct}");
    assert!(cr as f64 > random.len() as f64 * 0.99, "random data should not compress, got {cr}");
    // Mixed: half of the regions are random.
    let mixed = DataGen::mixed(3, MIB).take(8 * MIB as usize);
    let cm = zstd::bulk::compress(&mixed, 3).unwrap().len();
    assert!(cm > 4 * MIB as usize && cm < 7 * MIB as usize, "mixed 8 MiB compressed to {cm}");
}

#[test]
fn tree_comparison_detects_every_kind_of_difference() {
    let ws = Workspace::new();
    let t = TreeBuilder::new(ws.join("a"));
    t.file("d/f.txt", b"hello");
    t.file("d/g.bin", &DataGen::random(1).take(100_000));
    t.symlink("d/l", "f.txt");
    t.dir("empty");
    t.stamp_mtimes(5);
    let copy = ws.join("b");
    let st = Command::new("cp").arg("-a").arg(&t.root).arg(&copy).status().unwrap();
    assert!(st.success());
    let expected = scan(&t.root);
    let opts = CompareOpts { owner: true };
    assert!(diff_scans(&expected, &scan(&copy), opts).is_empty(), "identical copy must compare equal");

    let expect_diff = |what: &str, change: &dyn Fn(), undo: &dyn Fn()| {
        change();
        let d = diff_scans(&expected, &scan(&copy), opts);
        assert!(!d.is_empty(), "comparison did not notice: {what}");
        undo();
        let d = diff_scans(&expected, &scan(&copy), opts);
        assert!(d.is_empty(), "undo of {what} incomplete: {d:?}");
    };
    let f = copy.join("d/f.txt");
    let (ms, mn) = (expected[Path::new("d/f.txt")].mtime.0, expected[Path::new("d/f.txt")].mtime.1);
    expect_diff("mtime nanoseconds", &|| set_mtime_nofollow(&f, ms, (mn + 1) % 1_000_000_000), &|| {
        set_mtime_nofollow(&f, ms, mn)
    });
    expect_diff(
        "mode",
        &|| fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o4644)).unwrap(),
        &|| {
            let p = expected[Path::new("d/f.txt")].perm;
            fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(p)).unwrap()
        },
    );
    expect_diff(
        "content",
        &|| {
            fs::write(&f, b"hellO").unwrap();
            set_mtime_nofollow(&f, ms, mn);
        },
        &|| {
            fs::write(&f, b"hello").unwrap();
            set_mtime_nofollow(&f, ms, mn);
        },
    );
    let l = copy.join("d/l");
    let (ls, ln) = expected[Path::new("d/l")].mtime;
    let (ds, dn) = expected[Path::new("d")].mtime;
    expect_diff(
        "symlink target",
        &|| {
            fs::remove_file(&l).unwrap();
            std::os::unix::fs::symlink("g.bin", &l).unwrap();
            set_mtime_nofollow(&l, ls, ln);
            set_mtime_nofollow(&copy.join("d"), ds, dn);
        },
        &|| {
            fs::remove_file(&l).unwrap();
            std::os::unix::fs::symlink("f.txt", &l).unwrap();
            set_mtime_nofollow(&l, ls, ln);
            set_mtime_nofollow(&copy.join("d"), ds, dn);
        },
    );
    expect_diff("symlink mtime", &|| set_mtime_nofollow(&l, ls + 1, ln), &|| set_mtime_nofollow(&l, ls, ln));
    let e = copy.join("empty");
    let (es, en) = expected[Path::new("empty")].mtime;
    expect_diff("extra entry and directory mtime", &|| fs::write(e.join("x"), b"").unwrap(), &|| {
        fs::remove_file(e.join("x")).unwrap();
        set_mtime_nofollow(&e, es, en);
    });
    if is_root() {
        let (uid, gid) = user_ids("postgres");
        expect_diff("owner", &|| std::os::unix::fs::lchown(&f, Some(uid), Some(gid)).unwrap(), &|| {
            std::os::unix::fs::lchown(&f, Some(0), Some(0)).unwrap()
        });
    }
}

#[test]
fn wait4_reports_peak_rss() {
    // dd with a big block size touches a buffer of that size. ru_maxrss also includes the RSS
    // that the forked child inherited from this (test) process before exec, so compare two runs
    // instead of trusting a small absolute value.
    let dd = |bs: &str| {
        let mut c = Command::new("dd");
        c.args(["if=/dev/zero", "of=/dev/null", &format!("bs={bs}"), "count=1", "status=none"]);
        let r = run_with_peak_rss(&mut c, std::time::Duration::from_secs(60));
        assert!(r.status.success());
        r.max_rss_kib
    };
    let small = dd("1M");
    let big = dd("200M");
    eprintln!("dd bs=1M: {small} KiB, bs=200M: {big} KiB (test process: {:?})", self_rss_kib());
    assert!(big > 200 * 1024, "dd bs=200M peak RSS {big} KiB, expected > 200 MiB");
    assert!(big > small + 150 * 1024, "dd bs=200M peak RSS {big} KiB vs bs=1M {small} KiB");
}
