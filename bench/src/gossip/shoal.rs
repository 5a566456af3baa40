//! shoal's gossip process: where its binary is (built by this program unless told not to),
//! whether it has the `gossip` command, its command line and the event lines it prints:
//!
//! ```text
//! shoal gossip --name NAME --bind IP:PORT [--join IP:PORT]... [--encrypt KEY] [--network NET]...
//! member joined NAME IP:PORT | member suspected NAME | member failed NAME | member left NAME
//! member recovered NAME | entry put NET TABLE KEY VALUE owner=NODE | entry deleted NET TABLE KEY
//! ```

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{Kind, run_bounded};
use crate::first_line_of;

/// The binary to measure.
#[derive(Clone, Debug)]
pub(super) struct Shoal {
    pub(super) bin: PathBuf,
    /// `shoal --version`, or empty.
    pub(super) version: String,
    /// When the binary was written (UTC).
    pub(super) built: String,
    /// What building it said, when this program built it.
    pub(super) build_note: String,
}

/// The workspace root (this crate's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the binary is: `SHOAL_BIN`, else next to this program, else `target/release/`.
fn locate() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_BIN") {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("shoal")));
    match beside {
        Some(p) if p.exists() => p,
        _ => workspace().join("target/release/shoal"),
    }
}

/// Builds (with `build` and no `SHOAL_BIN`), finds and checks the binary: `Err` says why the
/// shoal side cannot be measured (no binary, a failed build, no `gossip` command yet).
pub(super) fn prepare(build: bool) -> Result<Shoal, String> {
    let mut build_note = String::new();
    if build && std::env::var_os("SHOAL_BIN").is_none() {
        if !crate::mesh::have("cargo") {
            build_note = "cargo is not on PATH: the binary was not rebuilt".into();
        } else {
            eprintln!("gossip: cargo build --release -p control --bin shoal");
            let manifest = workspace().join("Cargo.toml");
            let argv: Vec<String> = [
                "cargo",
                "build",
                "--release",
                "--manifest-path",
                &manifest.to_string_lossy(),
                "-p",
                "control",
                "--bin",
                "shoal",
            ]
            .map(String::from)
            .to_vec();
            run_bounded(&argv, Duration::from_secs(1800))?
                .ok("cargo build --release -p control --bin shoal")?;
            build_note = "built by this program (`cargo build --release -p control --bin shoal`) \
                          before the runs"
                .into();
        }
    }
    let bin = locate();
    if !bin.exists() {
        return Err(format!(
            "no shoal binary at {}: build it with `cargo build --release -p control --bin shoal` \
             or set SHOAL_BIN",
            bin.display()
        ));
    }
    let bin = bin.canonicalize().unwrap_or(bin);
    let shown = bin.display().to_string();
    let check = run_bounded(
        &[shown.clone(), "gossip".into(), "--help".into()],
        Duration::from_secs(10),
    )?;
    if !check.status.success() {
        let said: Vec<&str> = check
            .output
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(2)
            .collect();
        return Err(format!(
            "{shown} has no `gossip` command yet: `shoal gossip --help` exits with {} ({})",
            check
                .status
                .code()
                .map_or_else(|| check.status.to_string(), |c| c.to_string()),
            said.join(" / ")
        ));
    }
    // `--version` only when the binary has it (an error message is no version).
    let version = run_bounded(
        &[shown.clone(), "--version".into()],
        Duration::from_secs(10),
    )
    .ok()
    .filter(|f| f.status.success())
    .and_then(|f| f.output.lines().next().map(|l| l.trim().to_string()))
    .unwrap_or_default();
    Ok(Shoal {
        version,
        built: first_line_of(&["date", "-u", "-r", &shown, "+%F %T UTC"]),
        bin,
        build_note,
    })
}

/// `shoal gossip --name NAME --bind IP:PORT [--join TARGET]`.
pub(super) fn agent_argv(
    bin: &Path,
    name: &str,
    bind: SocketAddrV4,
    join: Option<SocketAddrV4>,
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        bin.display().to_string(),
        "gossip".into(),
        "--name".into(),
        name.into(),
        "--bind".into(),
        bind.to_string(),
    ];
    if let Some(j) = join {
        v.extend(["--join".into(), j.to_string()]);
    }
    v
}

/// `member <verb> NAME ...` at the start of a line (anything else, logs included, is not an
/// event).
pub(super) fn parse(line: &str) -> Option<(Kind, String)> {
    let mut w = line.strip_prefix("member ")?.split_whitespace();
    let kind = match w.next()? {
        "joined" => Kind::Join,
        "suspected" => Kind::Suspect,
        "failed" => Kind::Failed,
        "left" => Kind::Left,
        "recovered" => Kind::Recovered,
        _ => return None,
    };
    Some((kind, w.next()?.to_string()))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_shoal_event_lines() {
        assert_eq!(
            parse("member joined n3 127.0.0.13:7946"),
            Some((Kind::Join, "n3".into()))
        );
        assert_eq!(
            parse("member suspected n1"),
            Some((Kind::Suspect, "n1".into()))
        );
        assert_eq!(parse("member failed n1"), Some((Kind::Failed, "n1".into())));
        assert_eq!(parse("entry put net t k v owner=n1"), None);
        assert_eq!(parse("2025-01-01T00:00:00Z INFO member joined n3"), None);
        assert_eq!(parse("member joined"), None);
    }
}
