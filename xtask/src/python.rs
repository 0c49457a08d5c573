//! The Python interpreters fmd is tested on and their venvs (Flask + gunicorn), kept in the machine cache
//! and rebuilt only when the requirements change.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{command, paths};

pub struct Interpreter {
    /// Venv directory name, also what the end-to-end tests ask for (`py3.8`, `debian3.11`).
    pub label: String,
    pub python: PathBuf,
}

/// Debian's python3.11 (non-PIE, USDT probes) and the pyenv interpreters 3.8 to 3.13.
pub fn matrix() -> Vec<Interpreter> {
    let mut found = vec![];
    let debian = PathBuf::from("/usr/bin/python3.11");
    if debian.is_file() {
        found.push(Interpreter {
            label: "debian3.11".into(),
            python: debian,
        });
    }
    let root = pyenv_root();
    for minor in 8..=13 {
        let prefix = format!("3.{minor}.");
        let version = fs::read_dir(root.join("versions"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .max();
        if let Some(version) = version {
            let python = root
                .join("versions")
                .join(version)
                .join(format!("bin/python3.{minor}"));
            if python.is_file() {
                found.push(Interpreter {
                    label: format!("py3.{minor}"),
                    python,
                });
            }
        }
    }
    found
}

fn pyenv_root() -> PathBuf {
    if let Some(root) = std::env::var_os("PYENV_ROOT") {
        return PathBuf::from(root);
    }
    if let Ok(out) = command::output(Command::new("pyenv").arg("root")) {
        return PathBuf::from(out.trim());
    }
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
        .join(".pyenv")
}

pub fn venvs_dir() -> PathBuf {
    paths::cache().join("venvs")
}

/// The test apps' venvs, one per interpreter of the matrix.
pub fn ensure_all() -> Result<()> {
    let requirements = paths::workspace().join("tests/apps/requirements.txt");
    let interpreters = matrix();
    if interpreters.is_empty() {
        anyhow::bail!(
            "no Python interpreter found (expected /usr/bin/python3.11 or pyenv 3.8-3.13)"
        );
    }
    for interp in &interpreters {
        ensure_venv(
            &interp.python,
            &venvs_dir().join(&interp.label),
            &requirements,
        )?;
    }
    Ok(())
}

/// Creates (or refreshes) a venv at `dir` with `requirements` installed; a marker holding the
/// requirements' text makes the next call free.
pub fn ensure_venv(python: &Path, dir: &Path, requirements: &Path) -> Result<()> {
    let wanted = fs::read_to_string(requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let marker = dir.join(".fmd-requirements");
    if fs::read_to_string(&marker).is_ok_and(|have| have == wanted)
        && dir.join("bin/python").exists()
    {
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir.parent().expect("venvs have a parent"))?;
    command::run(Command::new(python).args(["-m", "venv"]).arg(dir))?;
    command::run(
        Command::new(dir.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements),
    )?;
    fs::write(&marker, wanted)?;
    Ok(())
}
