//! `cargo xtask dist`: the `keel` binary as it is shipped, at `target/dist/keel`.
//!
//! A keel command is a short-lived process: an agent runs `keel lease acquire`, then `keel lease
//! release`, and most of each process's life is start-up. On Linux with glibc the shipped binary
//! is therefore linked statically and at a fixed address (`+crt-static`,
//! `relocation-model=static`): no dynamic loader, no shared libraries to map, and no relocations
//! to apply. On the development machine a `keel lease heartbeat` process took 86 page faults
//! instead of 150, and `cargo xtask bench lease` measured the CLI acquire+release cycle at 2.7 ms
//! against 5.1 ms for the dynamic build (`docs/benchmarks.md`). The price is that the binary's own
//! code is not address-randomised; keel is a local tool that takes no network input. Elsewhere
//! `dist` is a plain release build.
//!
//! Next to the binary, `target/dist/man/` holds a man page per command (`keel.1`, `keel-lease.1`,
//! `keel-lease-acquire.1`, ...), written by the shipped binary itself (its hidden `keel man`), so
//! they are rendered from the very clap definition that parses its arguments.
//!
//! The development build (`cargo build --release`) stays dynamic: static flags would also apply
//! to proc-macro crates, which cannot be built that way, unless a target is named, and naming one
//! in `.cargo/config.toml` would tie every build to one platform.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

/// Flags for a start-up-lean static binary, on targets where they are known to work.
const STATIC_FLAGS: &str = "-C target-feature=+crt-static -C relocation-model=static";

/// Where the shipped binary lands.
pub fn binary() -> PathBuf {
    workspace_root().join("target/dist/keel")
}

/// Where its man pages land.
pub fn man_dir() -> PathBuf {
    workspace_root().join("target/dist/man")
}

pub fn run() -> anyhow::Result<()> {
    let host = host_triple()?;
    let target_dir = workspace_root().join("target/dist-build");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "--release", "--locked", "-p", "keel-cli", "--features", crate::ci::ETCD])
        .args(["--target", &host, "--target-dir"])
        .arg(&target_dir)
        .current_dir(workspace_root());
    let is_static = host.ends_with("-linux-gnu");
    if is_static {
        // With `--target` named, RUSTFLAGS reach only the target's crates, never proc macros.
        let flags =
            std::env::var("RUSTFLAGS").map_or_else(|_| STATIC_FLAGS.to_owned(), |f| format!("{f} {STATIC_FLAGS}"));
        build.env("RUSTFLAGS", flags);
    }
    let status = build.status().context("running cargo build for dist")?;
    if !status.success() {
        bail!("cargo build of the dist binary failed ({status})");
    }
    let built = target_dir.join(&host).join("release/keel");
    let shipped = binary();
    std::fs::create_dir_all(shipped.parent().expect("target/dist has a parent"))
        .with_context(|| format!("creating {}", shipped.display()))?;
    std::fs::copy(&built, &shipped).with_context(|| format!("copying {} to {}", built.display(), shipped.display()))?;
    println!("dist: {} ({host}, {})", shipped.display(), if is_static { "static" } else { "dynamic" });
    man_pages()?;
    smoke()
}

/// Writes the man pages with the shipped binary, into a fresh directory (a command that no longer
/// exists leaves no page behind), and checks the top-level and a nested page are there.
fn man_pages() -> anyhow::Result<()> {
    let dir = man_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let output = Command::new(binary())
        .arg("man")
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .with_context(|| format!("running {} man", binary().display()))?;
    if !output.status.success() {
        bail!("dist keel man failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let pages = String::from_utf8_lossy(&output.stdout).lines().count();
    for page in ["keel.1", "keel-lease-acquire.1"] {
        if !dir.join(page).is_file() {
            bail!("dist keel man wrote {pages} pages but not {page} in {}", dir.display());
        }
    }
    println!("dist: {pages} man pages in {}", dir.display());
    Ok(())
}

/// Runs the shipped binary through a lease cycle, so a dist build that links but misbehaves
/// (a static libc without something keel calls) fails CI rather than a user.
fn smoke() -> anyhow::Result<()> {
    let dir = workspace_root().join("target/dist-smoke");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let keel = |args: &[&str]| -> anyhow::Result<String> {
        // Its own workspace root: from the repository, keel would find (and bind) the repository.
        let output = Command::new(binary())
            .arg("--root")
            .arg(&dir)
            .args(args)
            .output()
            .with_context(|| format!("running {} {}", binary().display(), args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "dist keel {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let acquired = keel(&["lease", "acquire", "--lane", "smoke", "--tree", "src/", "--owner", "ci", "--json"])?;
    let live = keel(&["lease", "live", "--json"])?;
    keel(&["lease", "release", "--lane", "smoke", "--owner", "ci"])?;
    let after = keel(&["lease", "live", "--json"])?;
    let lanes = |text: &str| -> anyhow::Result<usize> {
        let live: serde_json::Value = serde_json::from_str(text).context("parsing keel lease live --json")?;
        Ok(live["leases"]
            .as_array()
            .map_or(0, |leases| leases.iter().filter(|l| l["lease"]["lane"] == "smoke").count()))
    };
    let acquired: serde_json::Value = serde_json::from_str(&acquired).context("parsing keel lease acquire --json")?;
    if acquired["outcome"] != "acquire" || lanes(&live)? != 1 || lanes(&after)? != 0 {
        bail!("dist keel smoke cycle: acquired {acquired:?}, live {live:?}, after release {after:?}");
    }
    println!("dist: {} acquired, listed and released a lease", binary().display());
    smoke_etcd(&dir)
}

/// The shipped binary has the etcd backend, and its client runs: asked to read leases from an
/// endpoint nothing listens on, it says "etcd unavailable" and exits 4 (not 2, "built without
/// etcd support").
fn smoke_etcd(dir: &std::path::Path) -> anyhow::Result<()> {
    let output = Command::new(binary())
        .arg("--root")
        .arg(dir)
        .args(["--backend", "etcd", "--etcd-endpoints", "http://127.0.0.1:1", "--etcd-prefix", "/keel/dist-smoke"])
        .args(["lease", "live"])
        .output()
        .with_context(|| format!("running {} lease live on etcd", binary().display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() != Some(4) || !stderr.contains("etcd unavailable") {
        bail!(
            "dist keel on a dead etcd endpoint: expected exit 4, \"etcd unavailable\"; got {}: {stderr}",
            output.status
        );
    }
    println!("dist: {} reports a dead etcd endpoint as unavailable", binary().display());
    Ok(())
}

/// The host's target triple, as rustc names it.
fn host_triple() -> anyhow::Result<String> {
    let output = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV did not name the host triple")
}
