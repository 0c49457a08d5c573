//! Reads the commit a git checkout is at straight from its `.git`, without running git or linking a git
//! library: `HEAD`, a symbolic ref followed through loose refs and `packed-refs`, a detached HEAD, and
//! linked worktrees (a `.git` file naming the gitdir, whose `commondir` holds the shared refs). Every read
//! is bounded: a broken or hostile repository gives an error, never a hang or a huge allocation.
//!
//! Paths written inside the repository (`gitdir:`, `commondir`) are the monitored process's paths; they
//! are resolved under the `root` given (`/proc/PID/root`), so a containerised app's repository is read
//! where it really is.

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader, Read as _},
    path::{Component, Path, PathBuf},
};

/// Most bytes read from `HEAD`, a loose ref, `commondir` or a `.git` file (real ones are < 100).
const MAX_SMALL_FILE: u64 = 4096;
/// Most symbolic refs followed in a chain (git's own limit is 5).
const MAX_SYMREF_DEPTH: usize = 5;
/// Most directories walked up from the start when looking for `.git`.
const MAX_ANCESTORS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no git repository at or above {}", start.display())]
    NotFound { start: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a git file fmd understands: {reason}", path.display())]
    Format { path: PathBuf, reason: &'static str },
    #[error("{} uses the reftable ref format, which fmd does not read: set app_version or git in the config", path.display())]
    Reftable { path: PathBuf },
    #[error("symbolic refs of {} loop or nest deeper than {MAX_SYMREF_DEPTH}", path.display())]
    SymrefDepth { path: PathBuf },
}

/// Where a repository's state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    /// The directory holding `HEAD` (`.git`, or `.git/worktrees/NAME` for a linked worktree).
    pub git_dir: PathBuf,
    /// The directory holding the shared refs and `packed-refs` (`git_dir` unless it has a `commondir`).
    pub common_dir: PathBuf,
}

/// What `HEAD` is at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// A commit id (40 hex digits, or 64 in a SHA-256 repository), and the branch when HEAD names one.
    Commit { id: String, branch: Option<String> },
    /// HEAD names a branch that has no commit yet (a fresh `git init`).
    Unborn { branch: String },
}

impl Head {
    pub fn commit(&self) -> Option<&str> {
        match self {
            Self::Commit { id, .. } => Some(id),
            Self::Unborn { .. } => None,
        }
    }
}

/// Finds the repository containing `start` (a directory), walking up no higher than `root`.
pub fn discover(root: &Path, start: &Path) -> Result<Repo, Error> {
    let mut dir = start.to_path_buf();
    for _ in 0..MAX_ANCESTORS {
        let dot_git = dir.join(".git");
        if dot_git.exists() {
            return open(root, &dot_git);
        }
        if dir == root || !dir.starts_with(root) || !dir.pop() {
            break;
        }
    }
    Err(Error::NotFound {
        start: start.to_path_buf(),
    })
}

/// Opens the repository at `path`: a `.git` directory, a `.git` file (`gitdir: ...`) or a work tree
/// containing either.
pub fn open(root: &Path, path: &Path) -> Result<Repo, Error> {
    let mut path = path.to_path_buf();
    if path.is_dir() && !path.join("HEAD").is_file() && path.join(".git").exists() {
        path.push(".git");
    }
    let git_dir = if path.is_file() {
        let text = read_small(&path)?;
        let target = text
            .lines()
            .find_map(|l| l.strip_prefix("gitdir:"))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Format {
                path: path.clone(),
                reason: "a .git file without a gitdir: line",
            })?;
        let base = path.parent().unwrap_or(Path::new("/"));
        rooted(root, base, target)
    } else {
        path
    };
    if !git_dir.join("HEAD").is_file() {
        return Err(Error::Format {
            path: git_dir,
            reason: "no HEAD file",
        });
    }
    let common_dir = match read_small(&git_dir.join("commondir")) {
        Ok(text) => rooted(root, &git_dir, text.trim()),
        Err(Error::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            git_dir.clone()
        }
        Err(e) => return Err(e),
    };
    Ok(Repo {
        git_dir,
        common_dir,
    })
}

/// `target` as written in the repository: relative to `base`, or absolute in the process's view (`root`).
fn rooted(root: &Path, base: &Path, target: &str) -> PathBuf {
    let target = Path::new(target);
    if target.is_absolute() {
        root.join(target.strip_prefix("/").unwrap_or(target))
    } else {
        base.join(target)
    }
}

impl Repo {
    /// Reads `HEAD` and follows it to a commit.
    pub fn head(&self) -> Result<Head, Error> {
        let head = self.git_dir.join("HEAD");
        if self.common_dir.join("reftable").is_dir() {
            return Err(Error::Reftable {
                path: self.common_dir.clone(),
            });
        }
        let mut text = read_small(&head)?;
        let mut branch = None;
        for _ in 0..=MAX_SYMREF_DEPTH {
            let value = text.trim();
            let Some(name) = value.strip_prefix("ref:") else {
                return object_id(value)
                    .map(|id| Head::Commit {
                        id: id.to_owned(),
                        branch: branch.clone(),
                    })
                    .ok_or(Error::Format {
                        path: head.clone(),
                        reason: "neither a ref nor a commit id",
                    });
            };
            let name = name.trim();
            if !valid_ref_name(name) {
                return Err(Error::Format {
                    path: head,
                    reason: "a ref name outside refs/",
                });
            }
            branch
                .get_or_insert_with(|| name.strip_prefix("refs/heads/").unwrap_or(name).to_owned());
            match self.loose_ref(name)? {
                Some(next) => text = next,
                None => {
                    return Ok(match self.packed_ref(name)? {
                        Some(id) => Head::Commit {
                            id,
                            branch: branch.clone(),
                        },
                        None => Head::Unborn {
                            branch: branch.unwrap_or_default(),
                        },
                    })
                }
            }
        }
        Err(Error::SymrefDepth { path: head })
    }

    /// The content of a loose ref: per-worktree refs live in the gitdir, shared ones in the common dir.
    fn loose_ref(&self, name: &str) -> Result<Option<String>, Error> {
        let per_worktree = name.starts_with("refs/worktree/") || name.starts_with("refs/bisect/");
        let dirs: &[&Path] = if per_worktree || self.git_dir == self.common_dir {
            &[&self.git_dir]
        } else {
            &[&self.common_dir]
        };
        for dir in dirs {
            match read_small(&dir.join(name)) {
                Ok(text) => return Ok(Some(text)),
                Err(Error::Read { source, .. })
                    if matches!(
                        source.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The id `name` has in `packed-refs`, read line by line (the file can be large).
    fn packed_ref(&self, name: &str) -> Result<Option<String>, Error> {
        let path = self.common_dir.join("packed-refs");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Read { path, source }),
        };
        let mut line = String::new();
        let mut reader = BufReader::new(file);
        loop {
            line.clear();
            // Lines are short; one longer than a small file is garbage, not a ref.
            let n = (&mut reader)
                .take(MAX_SMALL_FILE)
                .read_line(&mut line)
                .map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            // `# pack-refs with: ...` header and `^<id>` peeled tag lines.
            if line.starts_with('#') || line.starts_with('^') {
                continue;
            }
            if let Some((id, ref_name)) = line.trim_end().split_once(' ') {
                if ref_name == name {
                    return object_id(id)
                        .map(|id| Some(id.to_owned()))
                        .ok_or(Error::Format {
                            path,
                            reason: "a packed ref without a commit id",
                        });
                }
            }
        }
    }
}

/// `value` when it is a full object id (SHA-1 or SHA-256, lowercase hex).
fn object_id(value: &str) -> Option<&str> {
    ((value.len() == 40 || value.len() == 64)
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then_some(value)
}

/// A ref name that stays inside the repository: under `refs/`, no `..`, no absolute or odd components.
fn valid_ref_name(name: &str) -> bool {
    name.starts_with("refs/")
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !name
            .split('/')
            .any(|part| part.is_empty() || part.starts_with('.'))
}

fn read_small(path: &Path) -> Result<String, Error> {
    let read = || -> io::Result<String> {
        let mut text = String::new();
        File::open(path)?
            .take(MAX_SMALL_FILE)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    read().map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    /// A hand-made `.git` under `dir` with `files` (path, content).
    fn repo(dir: &Path, files: &[(&str, &str)]) {
        for (path, content) in files {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        }
    }

    fn check(root: &Path, start: &Path, expect: Result<Head, &str>) {
        let got = discover(root, start).and_then(|r| r.head());
        match (got, expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    fn commit(id: &str, branch: Option<&str>) -> Head {
        Head::Commit {
            id: id.to_owned(),
            branch: branch.map(str::to_owned),
        }
    }

    #[test]
    fn loose_packed_detached_and_unborn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let app = root.join("srv/app");
        fs::create_dir_all(app.join("pkg/sub")).expect("mkdir");
        // Loose ref, found from a subdirectory.
        repo(
            &app,
            &[
                (".git/HEAD", "ref: refs/heads/main\n"),
                (".git/refs/heads/main", &format!("{A}\n")),
            ],
        );
        check(root, &app.join("pkg/sub"), Ok(commit(A, Some("main"))));
        // Packed only (after `git pack-refs --all`); peeled lines and other refs are skipped.
        fs::remove_file(app.join(".git/refs/heads/main")).expect("rm");
        repo(
            &app,
            &[(
                ".git/packed-refs",
                &format!("# pack-refs with: peeled fully-peeled sorted\n{B} refs/heads/dev\n{A} refs/heads/main\n^{B}\n"),
            )],
        );
        check(root, &app, Ok(commit(A, Some("main"))));
        // A loose ref wins over the packed one (it is newer).
        repo(&app, &[(".git/refs/heads/main", B)]);
        check(root, &app, Ok(commit(B, Some("main"))));
        // Detached HEAD.
        repo(&app, &[(".git/HEAD", &format!("{A}\n"))]);
        check(root, &app, Ok(commit(A, None)));
        // A symbolic ref to a symbolic ref.
        repo(
            &app,
            &[
                (".git/HEAD", "ref: refs/heads/alias\n"),
                (".git/refs/heads/alias", "ref: refs/heads/main\n"),
            ],
        );
        check(root, &app, Ok(commit(B, Some("alias"))));
        // Fresh `git init`: no commit yet.
        repo(&app, &[(".git/HEAD", "ref: refs/heads/none\n")]);
        assert_eq!(
            discover(root, &app).expect("repo").head().expect("head"),
            Head::Unborn {
                branch: "none".into()
            }
        );
    }

    #[test]
    fn worktrees_and_absolute_paths_under_the_process_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // Main checkout at /src/app (process view), a linked worktree at /srv/deploy.
        repo(
            &root.join("src/app"),
            &[
                (".git/HEAD", "ref: refs/heads/main\n"),
                (
                    ".git/packed-refs",
                    &format!("{A} refs/heads/main\n{B} refs/heads/release\n"),
                ),
                (".git/worktrees/deploy/HEAD", "ref: refs/heads/release\n"),
                (".git/worktrees/deploy/commondir", "../..\n"),
            ],
        );
        repo(
            &root.join("srv/deploy"),
            &[(".git", "gitdir: /src/app/.git/worktrees/deploy\n")],
        );
        check(
            root,
            &root.join("srv/deploy"),
            Ok(commit(B, Some("release"))),
        );
        check(root, &root.join("src/app"), Ok(commit(A, Some("main"))));
        // A per-worktree ref lives in the worktree's own gitdir.
        repo(
            &root.join("src/app"),
            &[
                (".git/worktrees/deploy/HEAD", "ref: refs/bisect/bad\n"),
                (".git/worktrees/deploy/refs/bisect/bad", A),
            ],
        );
        check(
            root,
            &root.join("srv/deploy"),
            Ok(commit(A, Some("refs/bisect/bad"))),
        );
        // `open` takes the work tree, the .git file or the gitdir alike.
        for path in [
            "srv/deploy",
            "srv/deploy/.git",
            "src/app/.git/worktrees/deploy",
        ] {
            let repo = open(root, &root.join(path)).expect("open");
            assert_eq!(
                repo.common_dir,
                root.join("src/app/.git/worktrees/deploy/../..")
            );
        }
    }

    #[test]
    fn bad_repositories_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let app = root.join("app");
        fs::create_dir_all(&app).expect("mkdir");
        check(root, &app, Err("no git repository at or above"));
        for (head, fragment) in [
            ("garbage", "neither a ref nor a commit id"),
            ("ref: refs/../../../etc/passwd", "a ref name outside refs/"),
            ("ref: /etc/passwd", "a ref name outside refs/"),
            ("ref: refs/heads/x\n", "loop or nest"),
            ("1234", "neither a ref nor a commit id"),
        ] {
            repo(
                &app,
                &[
                    (".git/HEAD", head),
                    (".git/refs/heads/x", "ref: refs/heads/x"),
                ],
            );
            check(root, &app, Err(fragment));
        }
        repo(
            &app,
            &[
                (".git/HEAD", "ref: refs/heads/main"),
                (".git/reftable/tables.list", ""),
            ],
        );
        check(root, &app, Err("reftable"));
        fs::remove_dir_all(app.join(".git")).expect("rm");
        repo(&app, &[(".git", "not a gitdir line")]);
        check(root, &app, Err("without a gitdir"));
        // Huge files are read only up to the bound.
        fs::remove_file(app.join(".git")).expect("rm");
        repo(&app, &[(".git/HEAD", &"a".repeat(100_000))]);
        check(root, &app, Err("neither a ref nor a commit id"));
    }

    #[test]
    fn discovery_stays_under_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A repository above the process root is not the app's.
        repo(dir.path(), &[(".git/HEAD", &format!("{A}\n"))]);
        let root = dir.path().join("container");
        fs::create_dir_all(root.join("app")).expect("mkdir");
        check(&root, &root.join("app"), Err("no git repository"));
        check(dir.path(), &root.join("app"), Ok(commit(A, None)));
    }
}
