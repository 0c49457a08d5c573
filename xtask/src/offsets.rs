//! `cargo xtask gen-offsets`: regenerates `fmd-daemon/src/python/offsets.rs`, the CPython struct offsets fmd's
//! out-of-process reader uses, by compiling `offsets.c` against each pyenv interpreter's real headers.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

const PROGRAM: &str = include_str!("offsets.c");
/// The CPython minor versions fmd supports (3.8 ..= 3.13).
const MINORS: std::ops::RangeInclusive<u32> = 8..=13;

pub fn gen_offsets(pyenv_root: Option<PathBuf>, out: &Path) -> Result<()> {
    let root = match pyenv_root {
        Some(r) => r,
        None => {
            let o = Command::new("pyenv")
                .arg("root")
                .output()
                .context("run `pyenv root`")?;
            ensure!(o.status.success(), "`pyenv root` failed");
            PathBuf::from(String::from_utf8(o.stdout)?.trim())
        }
    };
    // Newest patch release installed for each minor version.
    let mut newest: BTreeMap<u32, (u32, PathBuf)> = BTreeMap::new();
    for entry in fs::read_dir(root.join("versions")).context("list pyenv versions")? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let parts: Vec<u32> = name
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        let [3, minor, patch] = parts[..] else {
            continue;
        };
        if MINORS.contains(&minor) && newest.get(&minor).is_none_or(|(p, _)| *p < patch) {
            newest.insert(minor, (patch, path));
        }
    }
    for minor in MINORS {
        ensure!(
            newest.contains_key(&minor),
            "no pyenv interpreter 3.{minor}.x under {}",
            root.display()
        );
    }
    let tmp = std::env::temp_dir().join(format!("fmd-gen-offsets-{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let src = tmp.join("offsets.c");
    fs::write(&src, PROGRAM)?;
    let mut body = String::new();
    let mut sources = Vec::new();
    for (minor, (patch, dir)) in &newest {
        let include = dir.join(format!("include/python3.{minor}"));
        let exe = tmp.join(format!("offsets-3.{minor}"));
        let status = Command::new("gcc")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .arg("-I")
            .arg(&include)
            .arg("-I")
            .arg(include.join("internal"))
            .status()
            .context("run gcc")?;
        ensure!(status.success(), "gcc failed for 3.{minor}.{patch}");
        let o = Command::new(&exe)
            .output()
            .with_context(|| format!("run {}", exe.display()))?;
        if !o.status.success() {
            bail!("{} failed", exe.display());
        }
        body.push_str("    Layout {\n");
        body.push_str(&String::from_utf8(o.stdout)?);
        body.push_str("    },\n");
        sources.push(format!("3.{minor}.{patch}"));
    }
    let _ = fs::remove_dir_all(&tmp);
    let text = format!(
        "//! Generated CPython struct offsets (x86_64 Linux, default non-debug build), one entry per minor version.\n\
         //! Do not edit: regenerate with `cargo xtask gen-offsets` (compiles xtask/src/offsets.c against each pyenv\n\
         //! interpreter's headers with -DPy_BUILD_CORE). Generated from: {}.\n\n\
         use super::layout::{{DebugOffsetsLayout, Layout}};\n\n\
         #[rustfmt::skip]\n\
         pub(super) const LAYOUTS: &[Layout] = &[\n{body}];\n",
        sources.join(", ")
    );
    fs::write(out, text).with_context(|| format!("write {}", out.display()))?;
    println!("wrote {} ({})", out.display(), sources.join(", "));
    Ok(())
}
