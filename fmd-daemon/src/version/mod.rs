//! The application version each request is served by (Flask-MonitoringDashboard's `APP_VERSION` / `GIT`):
//! the configured `app_version`, else the commit the app's git checkout is at, read for every new worker
//! (a deploy is a commit or pull plus a HUP, and the new workers bring the new version) from the
//! configured `git` path or from the repository holding the app's code (the Flask app's `root_path`,
//! then the worker's working directory), seen through `/proc/PID/root`.

pub mod git;

use std::path::{Path, PathBuf};

/// How the version of a new worker is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Fixed(String),
    Git(PathBuf),
    /// From the worker's app code and working directory.
    Discover,
}

impl Source {
    pub fn new(app_version: Option<&str>, git: Option<&Path>) -> Self {
        match (app_version.map(str::trim).filter(|v| !v.is_empty()), git) {
            (Some(v), _) => Self::Fixed(v.to_owned()),
            (None, Some(path)) => Self::Git(path.to_path_buf()),
            (None, None) => Self::Discover,
        }
    }

    /// The version of worker `pid`, whose Flask app lives in `app_root` (its `root_path`, in the process's
    /// view) when that is known. Blocking file reads: call it off the event loop.
    pub fn resolve(&self, pid: u32, app_root: Option<&str>) -> Result<String, git::Error> {
        let repo = match self {
            Self::Fixed(v) => return Ok(v.clone()),
            Self::Git(path) => git::open(Path::new("/"), path)?,
            Self::Discover => {
                let root = PathBuf::from(format!("/proc/{pid}/root"));
                let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
                let starts: Vec<PathBuf> = app_root
                    .map(PathBuf::from)
                    .into_iter()
                    .chain(cwd)
                    .filter(|p| p.is_absolute())
                    .map(|p| root.join(p.strip_prefix("/").unwrap_or(&p)))
                    .collect();
                discover_first(&root, &starts)?
            }
        };
        match repo.head()? {
            git::Head::Commit { id, .. } => Ok(id),
            git::Head::Unborn { branch } => Err(git::Error::Format {
                path: repo.git_dir.join("HEAD"),
                reason: if branch.is_empty() {
                    "HEAD has no commit yet"
                } else {
                    "HEAD's branch has no commit yet"
                },
            }),
        }
    }
}

/// The repository of the first start directory inside one; the first error when none is.
fn discover_first(root: &Path, starts: &[PathBuf]) -> Result<git::Repo, git::Error> {
    let mut first_err = None;
    for start in starts {
        match git::discover(root, start) {
            Ok(repo) => return Ok(repo),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(git::Error::NotFound {
        start: root.to_path_buf(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            Source::new(Some(" 1.0 "), Some(Path::new("/x"))),
            Source::Fixed("1.0".into())
        );
        assert_eq!(
            Source::new(Some(""), Some(Path::new("/x"))),
            Source::Git("/x".into())
        );
        assert_eq!(Source::new(None, None), Source::Discover);
        assert_eq!(
            Source::Fixed("v2".into()).resolve(1, None).expect("fixed"),
            "v2"
        );
    }

    #[test]
    fn this_process_is_found_through_proc() {
        // Our own working directory is the crate inside fmd's checkout (when tests run from one).
        let id = "3333333333333333333333333333333333333333";
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        std::fs::write(dir.path().join(".git/HEAD"), format!("{id}\n")).expect("head");
        std::fs::create_dir_all(dir.path().join("pkg")).expect("mkdir");
        let app_root = dir.path().join("pkg");
        let got = Source::Discover
            .resolve(std::process::id(), app_root.to_str())
            .expect("version");
        assert_eq!(got, id);
        assert_eq!(
            Source::Git(dir.path().to_path_buf())
                .resolve(0, None)
                .expect("git"),
            id
        );
    }
}
