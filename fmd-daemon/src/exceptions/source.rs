//! The source lines around a traceback's frames, read from the app's own files through
//! `/proc/PID/root` (the worker may run in a container or chroot), as Flask-MonitoringDashboard shows them.
//! Files are cached by path and re-read when their modification time changes.

use std::{collections::HashMap, fs, path::PathBuf, sync::Arc, time::SystemTime};

use serde::{Deserialize, Serialize};

/// Lines shown before and after a frame's line.
pub const CONTEXT_LINES: u32 = 5;
/// Files larger than this are not read.
const MAX_SOURCE_BYTES: u64 = 4 << 20;
/// Files kept in the cache before it is emptied.
const MAX_FILES: usize = 512;

/// One line of source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLine {
    pub line: u32,
    pub code: String,
}

#[derive(Default)]
pub struct SourceFiles {
    files: HashMap<PathBuf, (Option<SystemTime>, Arc<Vec<String>>)>,
    /// Files that could not be read (counted once per read attempt).
    pub unreadable: u64,
}

impl SourceFiles {
    /// Lines `line - CONTEXT_LINES ..= line + CONTEXT_LINES` of `file` as worker `pid` sees it; empty
    /// when the file cannot be read (`<frozen ...>`, `<string>`, deleted, too large).
    pub fn around(&mut self, pid: u32, file: &str, line: u32) -> Vec<SourceLine> {
        let Some(lines) = self.lines(pid, file) else {
            return Vec::new();
        };
        if line == 0 {
            return Vec::new();
        }
        let first = line.saturating_sub(CONTEXT_LINES).max(1);
        let last = line.saturating_add(CONTEXT_LINES);
        (first..=last)
            .filter_map(|n| {
                let text = lines.get(usize::try_from(n - 1).ok()?)?;
                Some(SourceLine {
                    line: n,
                    code: text.trim_end().to_owned(),
                })
            })
            .collect()
    }

    fn lines(&mut self, pid: u32, file: &str) -> Option<Arc<Vec<String>>> {
        if file.starts_with('<') {
            return None;
        }
        let path = if file.starts_with('/') {
            PathBuf::from(format!("/proc/{pid}/root{file}"))
        } else {
            // A module imported through a relative sys.path entry: relative to the worker's directory.
            PathBuf::from(format!("/proc/{pid}/cwd/{file}"))
        };
        let Ok(meta) = fs::metadata(&path) else {
            self.unreadable += 1;
            return None;
        };
        let mtime = meta.modified().ok();
        if let Some((m, lines)) = self.files.get(&path) {
            if *m == mtime {
                return Some(Arc::clone(lines));
            }
        }
        if meta.len() > MAX_SOURCE_BYTES {
            return None;
        }
        let Ok(text) = fs::read(&path) else {
            self.unreadable += 1;
            return None;
        };
        let lines: Arc<Vec<String>> = Arc::new(
            String::from_utf8_lossy(&text)
                .lines()
                .map(str::to_owned)
                .collect(),
        );
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        self.files.insert(path, (mtime, Arc::clone(&lines)));
        Some(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_around_a_frame_through_proc_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("app.py");
        let text: String = (1..=20).map(|n| format!("line {n}   \n")).collect();
        fs::write(&file, text).expect("write");
        let mut s = SourceFiles::default();
        let pid = std::process::id();
        let got = s.around(pid, file.to_str().expect("utf-8"), 3);
        assert_eq!(got.first().map(|l| l.line), Some(1));
        assert_eq!(
            got.last().map(|l| (l.line, l.code.as_str())),
            Some((8, "line 8"))
        );
        let end = s.around(pid, file.to_str().expect("utf-8"), 19);
        assert_eq!(
            end.iter().map(|l| l.line).collect::<Vec<_>>(),
            (14..=20).collect::<Vec<_>>()
        );
        assert!(s.around(pid, "<frozen runpy>", 3).is_empty());
        assert!(s.around(pid, "/nonexistent/x.py", 3).is_empty());
        assert_eq!(s.unreadable, 1);
    }
}
