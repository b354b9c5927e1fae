//! Finding PostgreSQL's programs for one major version. A data directory can only be run,
//! created or inspected by the server programs of its own major version (postgres, initdb,
//! pg_controldata, pg_checksums); the clients that read a server's data (pg_basebackup, pg_dump,
//! pg_restore, pg_amcheck) handle older servers but not newer ones, so they must be at least the
//! server's version. psql's plain SQL works with every supported server. One machine may hold
//! several versions side by side, so every usual place is searched, always in the same order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::Error;

/// Where the programs come from first: `--pg-bin DIR` (or `DRCTL_PG_BIN`).
static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The major version of each program already asked (`None`: not a PostgreSQL program).
static VERSIONS: OnceLock<Mutex<HashMap<PathBuf, Option<u32>>>> = OnceLock::new();

/// The oldest major version drctl supports.
const OLDEST: u32 = 13;

/// Makes `dir` the first place programs are looked for; server programs then come from it only.
pub fn set_bin_dir(dir: PathBuf) {
    let _ = BIN_DIR.set(dir);
}

/// A server program of exactly major version `major`, e.g. `postgres` for a backup of 14.
/// With `--pg-bin`, only that folder counts: a program of another version there is refused
/// rather than silently replaced by one found elsewhere.
pub fn server(name: &str, major: u32, purpose: &str) -> Result<PathBuf, Error> {
    let places = server_places();
    let found = candidates_in(&places, name);
    match found.iter().find(|(_, v)| *v == Some(major)) {
        Some((path, _)) => Ok(path.clone()),
        None => Err(missing(name, &major.to_string(), purpose, &places, &found)),
    }
}

/// The server program `name` for the data directory `dir`: of the major version in its
/// PG_VERSION (returned too), since another version would fail on the directory, or worse,
/// half-start.
pub fn for_data_directory(name: &str, dir: &Path) -> Result<(PathBuf, u32), Error> {
    let major = super::datadir::major_version(dir)?;
    let purpose = format!("the PostgreSQL {major} cluster in {}", dir.display());
    Ok((server(name, major, &purpose)?, major))
}

/// A client program of major version `major` or newer: the same version where installed,
/// else the newest.
pub fn client(name: &str, major: u32, purpose: &str) -> Result<PathBuf, Error> {
    let places = places();
    let found = candidates_in(&places, name);
    match pick_client(&found, major) {
        Some(path) => Ok(path.clone()),
        None => Err(missing(name, &format!("{major} or newer"), purpose, &places, &found)),
    }
}

/// Of the programs found (in search order), the first of version `major`, else the newest newer.
fn pick_client(found: &[(PathBuf, Option<u32>)], major: u32) -> Option<&PathBuf> {
    let exact = found.iter().find(|(_, v)| *v == Some(major));
    let newer = found.iter().filter(|(_, v)| v.is_some_and(|v| v > major)).max_by_key(|(_, v)| *v);
    exact.or(newer).map(|(path, _)| path)
}

/// A server program of the newest supported version installed (with `--pg-bin`, of that
/// folder), and that version.
pub fn newest_server_program(name: &str, purpose: &str) -> Result<(PathBuf, u32), Error> {
    let places = server_places();
    let found = candidates_in(&places, name);
    let supported = found.iter().filter_map(|(path, v)| Some((path, v.filter(|v| *v >= OLDEST)?)));
    match supported.max_by_key(|(_, v)| *v) {
        Some((path, version)) => Ok((path.clone(), version)),
        None => Err(missing(name, &format!("{OLDEST} or newer"), purpose, &places, &found)),
    }
}

/// psql, for plain SQL: the first one found, or the bare name (the error then comes from
/// running it).
pub fn psql() -> PathBuf {
    let found = candidates_in(&places(), "psql");
    found.into_iter().find(|(_, v)| v.is_some()).map_or_else(|| PathBuf::from("psql"), |(path, _)| path)
}

/// The major version in a program's `--version` line, e.g. 15 in "psql (PostgreSQL) 15.18
/// (Debian 15.18-0+deb12u1)" or 18 in "postgres (PostgreSQL) 18beta1".
fn major_of(version_output: &str) -> Option<u32> {
    let rest = version_output.split("(PostgreSQL) ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The major version of the program at `path`, asked once per process.
fn version_of(path: &Path) -> Option<u32> {
    let cache = VERSIONS.get_or_init(Default::default);
    if let Some(known) = cache.lock().expect("poisoned").get(path) {
        return *known;
    }
    let out = Command::new(path).arg("--version").env("LC_ALL", "C").output().ok();
    let version = out.filter(|o| o.status.success()).and_then(|o| major_of(&String::from_utf8_lossy(&o.stdout)));
    cache.lock().expect("poisoned").insert(path.to_path_buf(), version);
    version
}

/// One place programs are looked for, and how to name it in a message.
#[derive(Clone)]
struct Place {
    label: String,
    dirs: Vec<PathBuf>,
}

impl Place {
    fn bin_dir(dir: &Path) -> Place {
        Place { label: format!("--pg-bin/DRCTL_PG_BIN ({})", dir.display()), dirs: vec![dir.to_path_buf()] }
    }
}

/// Where server programs come from: only --pg-bin's folder when given, else every place.
fn server_places() -> Vec<Place> {
    match BIN_DIR.get() {
        Some(dir) => vec![Place::bin_dir(dir)],
        None => places(),
    }
}

/// Every place, in the order searched; found once per process.
fn places() -> Vec<Place> {
    static PLACES: OnceLock<Vec<Place>> = OnceLock::new();
    PLACES.get_or_init(search_order).clone()
}

/// The search order: --pg-bin, pg_config's bindir, PATH, then the packagers' folders (Debian's
/// and Ubuntu's /usr/lib/postgresql/N/bin, PGDG's /usr/pgsql-N/bin, a source build's
/// /usr/local/pgsql/bin), newest version first.
fn search_order() -> Vec<Place> {
    let path: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let pg_config = path.iter().map(|d| d.join("pg_config")).find(|p| p.is_file());
    let bindir = pg_config.as_ref().and_then(|p| {
        let out = Command::new(p).arg("--bindir").output().ok().filter(|o| o.status.success())?;
        Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    let mut list = Vec::new();
    if let Some(dir) = BIN_DIR.get() {
        list.push(Place::bin_dir(dir));
    }
    if let Some(dir) = bindir {
        list.push(Place { label: format!("pg_config --bindir ({})", dir.display()), dirs: vec![dir] });
    }
    list.push(Place { label: "PATH".into(), dirs: path });
    for (pattern, parent, prefix, suffix) in
        [("/usr/lib/postgresql/*/bin", "/usr/lib/postgresql", "", "bin"), ("/usr/pgsql-*/bin", "/usr", "pgsql-", "bin")]
    {
        list.push(Place { label: pattern.into(), dirs: versioned_dirs(Path::new(parent), prefix, suffix) });
    }
    list.push(Place { label: "/usr/local/pgsql/bin".into(), dirs: vec![PathBuf::from("/usr/local/pgsql/bin")] });
    list
}

/// `parent/<prefix>N/<suffix>` for every version N there, newest first.
fn versioned_dirs(parent: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix(prefix)?.parse().ok()?;
            Some((version, e.path().join(suffix)))
        })
        .collect();
    found.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    found.into_iter().map(|(_, dir)| dir).collect()
}

/// Every `name` in `places`, in order (each path once), with its major version.
fn candidates_in(places: &[Place], name: &str) -> Vec<(PathBuf, Option<u32>)> {
    let mut seen = Vec::new();
    for dir in places.iter().flat_map(|p| &p.dirs) {
        let path = dir.join(name);
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if path.is_file() && !seen.iter().any(|(_, r, _): &(PathBuf, PathBuf, _)| *r == real) {
            let version = version_of(&path);
            seen.push((path, real, version));
        }
    }
    seen.into_iter().map(|(path, _, version)| (path, version)).collect()
}

fn missing(name: &str, needed: &str, purpose: &str, places: &[Place], found: &[(PathBuf, Option<u32>)]) -> Error {
    let searched = places.iter().map(|p| p.label.as_str()).collect::<Vec<_>>().join(", ");
    let others = found
        .iter()
        .map(|(path, v)| format!("{} is {}", path.display(), v.map_or("not PostgreSQL's".into(), |v| format!("{v}"))))
        .collect::<Vec<_>>();
    let found = match others.is_empty() {
        true => "none was found".to_string(),
        false => format!("found only: {}", others.join("; ")),
    };
    Error::MissingProgram { program: name.into(), needed: needed.into(), purpose: purpose.into(), searched, found }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{major_of, pick_client};

    #[test]
    fn a_client_of_the_servers_version_else_the_newest_newer_one() {
        let found: Vec<(PathBuf, Option<u32>)> = [("a/16", Some(16)), ("b/13", Some(13)), ("c/18", Some(18))]
            .into_iter()
            .chain([("d/15", Some(15)), ("e/x", None), ("f/15", Some(15))])
            .map(|(p, v)| (PathBuf::from(p), v))
            .collect();
        let pick = |major| pick_client(&found, major).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(pick(15).as_deref(), Some("d/15"), "the first of the same version");
        assert_eq!(pick(14).as_deref(), Some("c/18"), "else the newest newer one");
        assert_eq!(pick(13).as_deref(), Some("b/13"));
        assert_eq!(pick(19), None, "never an older one");
    }

    #[test]
    fn major_version_from_version_lines() {
        assert_eq!(major_of("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"), Some(15));
        assert_eq!(major_of("pg_basebackup (PostgreSQL) 13.23\n"), Some(13));
        assert_eq!(major_of("postgres (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(major_of("psql (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(major_of("garbage"), None);
    }
}
