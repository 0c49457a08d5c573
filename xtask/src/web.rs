//! The dashboard in web/: its npm packages (`npm ci`, only when package-lock.json changed), its bundle
//! (`vite build` into web/dist, only when a source is newer than the last bundle), which fmd-daemon
//! embeds, and its unit tests and type checks.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{bail, Context as _, Result};

use crate::{command, paths};

/// Oldest Node.js Vite 8 runs on.
const NODE_MIN: (u32, u32) = (20, 19);

pub fn dir() -> PathBuf {
    paths::workspace().join("web")
}

/// Node.js and npm are there and recent enough for the pinned Vite.
pub fn check_node() -> Result<()> {
    let version = command::output(Command::new("node").arg("--version"))
        .context("Node.js is needed to build the dashboard (install nodejs 20.19 or newer)")?;
    let mut parts = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < NODE_MIN {
        bail!(
            "Node.js {} is too old for the dashboard's build: install {}.{} or newer",
            version.trim(),
            NODE_MIN.0,
            NODE_MIN.1
        );
    }
    if !command::exists("npm") {
        bail!("npm is needed to build the dashboard (it comes with Node.js)");
    }
    Ok(())
}

/// `npm ci` unless node_modules was installed from this very package-lock.json.
pub fn install() -> Result<()> {
    check_node()?;
    let web = dir();
    let lock =
        fs::read(web.join("package-lock.json")).context("web/package-lock.json is missing")?;
    // npm ci writes node_modules/.package-lock.json; our own copy of the lock says which one it used.
    let stamp = web.join("node_modules/.fmd-installed-lock");
    if fs::read(&stamp).is_ok_and(|installed| installed == lock) {
        return Ok(());
    }
    command::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
            .current_dir(&web),
    )?;
    fs::write(&stamp, lock).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(())
}

/// Builds web/dist unless it is newer than every source of the bundle.
pub fn build() -> Result<()> {
    install()?;
    let web = dir();
    let built = modified(&web.join("dist/index.html"));
    let sources = [
        "src",
        "index.html",
        "vite.config.ts",
        "svelte.config.js",
        "package-lock.json",
        "tsconfig.json",
    ];
    let newest = sources
        .iter()
        .map(|s| newest_in(&web.join(s)))
        .max()
        .flatten();
    if let (Some(built), Some(newest)) = (built, newest) {
        if built >= newest {
            return Ok(());
        }
    }
    command::run(Command::new("npm").args(["run", "build"]).current_dir(&web))
}

/// Vitest unit tests and the type check (svelte-check over TypeScript strict).
pub fn test() -> Result<()> {
    install()?;
    let web = dir();
    command::run(Command::new("npm").args(["run", "check"]).current_dir(&web))?;
    command::run(Command::new("npm").args(["test"]).current_dir(&web))
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn newest_in(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest_in(&e.path()))
        .max()
}
