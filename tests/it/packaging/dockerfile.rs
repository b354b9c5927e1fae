//! The Dockerfile: a locked release build from the sources .dockerignore lets in, run
//! unprivileged under tini with the PostgreSQL client, at the path the manifests use.

use clap::Parser;

use drctl::cli::Cli;

use super::manifests::{drctl_argv, is_program, manifests, pods};
use super::{read, root};

struct Instruction {
    keyword: String,
    rest: String,
}

struct Dockerfile {
    /// Instructions per stage, each stage starting with its FROM.
    stages: Vec<Vec<Instruction>>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let text = read("Dockerfile");
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        let mut stages: Vec<Vec<Instruction>> = Vec::new();
        for line in logical.iter().filter(|l| !l.trim().is_empty()) {
            let (keyword, rest) = line.trim().split_once(char::is_whitespace).unwrap_or((line.trim(), ""));
            let instruction = Instruction { keyword: keyword.to_ascii_uppercase(), rest: rest.trim().to_string() };
            if instruction.keyword == "FROM" {
                stages.push(Vec::new());
            }
            if instruction.keyword != "ARG" || !stages.is_empty() {
                stages.last_mut().expect("the Dockerfile starts with FROM").push(instruction);
            }
        }
        Dockerfile { stages }
    }

    fn last_stage(&self) -> usize {
        self.stages.len() - 1
    }

    /// The FROM of a stage: image and stage name.
    fn from(&self, stage: usize) -> (String, Option<String>) {
        let words: Vec<&str> = self.stages[stage][0].rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        let name = (words.len() == 3 && words[1].eq_ignore_ascii_case("as")).then(|| words[2].to_string());
        (words[0].to_string(), name)
    }

    fn all(&self, stage: usize, keyword: &str) -> Vec<&str> {
        self.stages[stage].iter().filter(|i| i.keyword == keyword).map(|i| i.rest.as_str()).collect()
    }

    /// The last such instruction of the stage, in exec (JSON) form.
    fn exec_form(&self, stage: usize, keyword: &str) -> Option<Vec<String>> {
        let rest = *self.all(stage, keyword).last()?;
        Some(
            serde_json::from_str(rest)
                .unwrap_or_else(|e| panic!("Dockerfile: {keyword} {rest}: use the exec form: {e}")),
        )
    }
}

/// The path of drctl in its image: the Dockerfile's ENTRYPOINT's.
pub fn image_binary() -> String {
    let dockerfile = Dockerfile::read();
    let entrypoint = dockerfile.exec_form(dockerfile.last_stage(), "ENTRYPOINT").expect("an ENTRYPOINT");
    entrypoint.into_iter().find(|w| is_program(w, "drctl")).expect("the ENTRYPOINT runs drctl")
}

/// Whether .dockerignore keeps `path` out of the build context (the last matching pattern wins;
/// a pattern matches a path or any of its parents; `*` and `?` within one path component).
pub fn docker_ignored(patterns: &[String], path: &str) -> bool {
    fn glob(pattern: &[u8], text: &[u8]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..])),
            (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut ignored = false;
    for pattern in patterns {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern.as_str()),
        };
        let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        assert!(!parts.contains(&"**"), ".dockerignore: this test does not understand `**`");
        let matched = parts.len() <= components.len()
            && parts.iter().zip(&components).all(|(p, c)| glob(p.as_bytes(), c.as_bytes()));
        if matched {
            ignored = !negated;
        }
    }
    ignored
}

#[test]
fn the_dockerfile_builds_drctl_and_runs_it_unprivileged_under_tini_with_the_postgresql_client() {
    let dockerfile = Dockerfile::read();
    let last = dockerfile.last_stage();
    assert!(last >= 1, "a multi-stage build: a build stage and a slim runtime stage");
    let stage_names: Vec<Option<String>> = (0..=last).map(|s| dockerfile.from(s).1).collect();
    assert!(stage_names[..last].iter().all(Option::is_some), "name the build stages (FROM … AS name): {stage_names:?}");

    // The build stage: the locked release build, from the sources .dockerignore lets in.
    let build = (0..last)
        .find(|&s| dockerfile.all(s, "RUN").iter().any(|r| r.contains("cargo build --release --locked")))
        .expect("a stage runs `cargo build --release --locked`");
    let (build_image, build_name) = dockerfile.from(build);
    assert!(build_image.starts_with("rust:"), "the build stage starts from a rust image: {build_image}");
    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut copied = Vec::new();
    for copy in dockerfile.all(build, "COPY") {
        let words: Vec<&str> = copy.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for source in &words[..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(root().join(source).exists(), "Dockerfile: COPY {source}: no such file");
            assert!(!docker_ignored(&ignore, source), ".dockerignore keeps {source} out, which the Dockerfile copies");
            copied.push(source.to_string());
        }
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied.iter().any(|c| c == needed), "the build stage does not copy {needed}: {copied:?}");
    }
    // cargo reads no manifest whose [[bench]] files are missing.
    let manifest = read("Cargo.toml");
    for bench in manifest.split("[[bench]]").skip(1) {
        let name = bench
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("name")
                    .map(|v| v.trim().trim_start_matches('=').trim().trim_matches('"').to_string())
            })
            .expect("a [[bench]] has a name");
        let file = format!("benches/{name}.rs");
        assert!(
            copied.iter().any(|c| file == *c || file.starts_with(&format!("{c}/"))),
            "Cargo.toml declares bench {name}: the build stage must copy {file}"
        );
        assert!(!docker_ignored(&ignore, &file), ".dockerignore keeps {file} out");
    }
    for path in ["target", "target/release/drctl", ".git", "bench", "tests/it/main.rs", ".venv"] {
        assert!(docker_ignored(&ignore, path), ".dockerignore should keep {path} out of the build context");
    }

    // The runtime stage.
    let (runtime_image, _) = dockerfile.from(last);
    assert!(
        runtime_image.starts_with("debian:") && runtime_image.ends_with("-slim"),
        "a slim Debian runtime: {runtime_image}"
    );
    let installs = dockerfile.all(last, "RUN").join("\n");
    for package in ["ca-certificates", "tini"] {
        assert!(installs.split_whitespace().any(|w| w == package), "the runtime stage installs {package}");
    }
    // Every supported version's clients and, for drills and `restore --start` in the drctl pod,
    // its server binaries, from PGDG's repository.
    let versions = dockerfile.all(last, "ARG").into_iter().find_map(|a| a.strip_prefix("PG_VERSIONS="));
    let versions = versions.expect("ARG PG_VERSIONS=\"…\" names the PostgreSQL versions installed").trim_matches('"');
    assert_eq!(versions, "13 14 15 16 17 18", "the image carries every supported PostgreSQL version");
    assert!(
        installs.contains(r#"for v in $PG_VERSIONS; do echo "postgresql-client-$v postgresql-$v"; done"#),
        "the runtime stage installs postgresql-client-N and postgresql-N of each version:\n{installs}"
    );
    assert!(installs.contains("https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main"), "PGDG's repository");
    assert!(installs.contains("--no-install-recommends"), "apt-get install --no-install-recommends");
    let user = *dockerfile.all(last, "USER").last().expect("a USER in the runtime stage");
    let user = user.split(':').next().unwrap();
    assert!(user != "root" && user != "0" && !user.is_empty(), "USER {user}: run as a non-root user");
    assert!(user.parse::<u32>().is_ok(), "USER {user}: numeric, so runAsNonRoot can verify it");
    let entrypoint = dockerfile.exec_form(last, "ENTRYPOINT").expect("an ENTRYPOINT");
    assert!(entrypoint.len() >= 3 && is_program(&entrypoint[0], "tini"), "ENTRYPOINT {entrypoint:?}: tini first");
    let binary = image_binary();
    assert_eq!(drctl_argv(&entrypoint), Some(Vec::new()), "ENTRYPOINT {entrypoint:?}: tini -- drctl, nothing after");
    // The binary the ENTRYPOINT runs is the one the build stage made.
    let from_build = dockerfile.all(last, "COPY").into_iter().any(|copy| {
        let words: Vec<&str> = copy.split_whitespace().collect();
        let from = words.iter().find_map(|w| w.strip_prefix("--from="));
        let from_ok = from.is_some_and(|f| Some(f.to_string()) == build_name || f == build.to_string());
        from_ok && words.last() == Some(&binary.as_str()) && words.iter().any(|w| w.contains("drctl"))
    });
    assert!(from_build, "the runtime stage copies the build stage's drctl to {binary}");
    // CMD: drctl arguments that parse (`--help` counts).
    if let Some(cmd) = dockerfile.exec_form(last, "CMD") {
        let full: Vec<String> = std::iter::once("drctl".to_string()).chain(cmd.iter().cloned()).collect();
        match Cli::try_parse_from(&full) {
            Ok(_) => {}
            Err(e)
                if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            }
            Err(e) => panic!("Dockerfile CMD {cmd:?} does not parse:\n{}", e.render()),
        }
    }
    // The manifests' copy of the binary runs in the postgres image: same Debian release as the
    // image it was built in, so the glibc it needs is there.
    let release = build_image.rsplit('-').next().unwrap().to_string();
    assert!(
        runtime_image.contains(&release),
        "build ({build_image}) and runtime ({runtime_image}) on one Debian release"
    );
    for pod in pods(&manifests()) {
        for c in pod.containers.iter().filter(|c| c.runs_postgres()) {
            if c.mounts.iter().any(|m| m.path.contains("drctl")) {
                assert!(
                    c.image.contains(&release),
                    "{}: {} runs drctl built on Debian {release}: pin its -{release} tag",
                    pod.at,
                    c.image
                );
            }
        }
    }
}
