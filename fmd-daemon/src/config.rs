//! The daemon's one configuration: TOML file (default /etc/fmd/fmd.toml) overridden by flags and `FMD_*`
//! environment variables, validated once at startup and passed around as `Arc<Config>`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/fmd/fmd.toml";
pub const DEFAULT_DB: &str = "/var/lib/fmd/fmd.duckdb";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9876";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The DuckDB file requests are stored in.
    pub db: PathBuf,
    /// Address of the HTTP API, dashboard and metrics.
    pub listen: SocketAddr,
    /// URL prefix of the dashboard and API behind a reverse proxy ("/fmd"); "" serves them at the root.
    pub base_path: String,
    pub capture: CaptureConfig,
    pub profiler: ProfilerConfig,
    /// A fixed application version for every request (Flask-MonitoringDashboard's `APP_VERSION`).
    pub app_version: Option<String>,
    /// The app's `.git` or work tree (FMD's `GIT`; relative to the config file); without it and
    /// `app_version`, the repository holding the app's code is found per worker.
    pub git: Option<PathBuf>,
    /// How a request's user is found (FMD's `group_by`).
    pub users: crate::identity::UsersConfig,
    /// Which peers may forward the client's address.
    pub proxies: crate::identity::ProxiesConfig,
    /// Level (0-3) given to endpoints when first seen (FMD's `MONITOR_LEVEL`); `None`: 3 while the profiler
    /// runs, else 1. Changed per endpoint at run time with `fmd-daemon level set`.
    #[serde(alias = "MONITOR_LEVEL")]
    pub monitor_level: Option<u8>,
    /// A request is an outlier when slower than this times its endpoint's average (FMD's
    /// `OUTLIER_DETECTION_CONSTANT`).
    #[serde(alias = "OUTLIER_DETECTION_CONSTANT")]
    pub outlier_detection_constant: f64,
    /// Header, query, form and JSON field names (case-insensitive substrings, `-` read as `_`) whose values
    /// outliers keep redacted; Authorization, Cookie, Set-Cookie and Proxy-Authorization always are.
    pub redact_fields: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // Root-owned state, like other system daemons.
            db: PathBuf::from(DEFAULT_DB),
            // Loopback only: the API shows request details and must not be exposed by accident.
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            // At the root, as when nothing sits in front of the daemon.
            base_path: String::new(),
            capture: CaptureConfig::default(),
            profiler: ProfilerConfig::default(),
            // Neither: the commit of the app's git checkout, when there is one.
            app_version: None,
            git: None,
            users: crate::identity::UsersConfig::default(),
            proxies: crate::identity::ProxiesConfig::default(),
            // As today: level 3 while the profiler runs.
            monitor_level: None,
            // Flask-MonitoringDashboard's default.
            outlier_detection_constant: crate::outliers::DEFAULT_CONSTANT,
            // Names that hold credentials in common Flask apps.
            redact_fields: crate::outliers::context::DEFAULT_REDACT
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Bytes of each request (head and start of body) kept for outlier details.
    pub keep_head_bytes: usize,
    /// A connection silent this long is finished (its pending request stored) and forgotten.
    pub idle_timeout_secs: u64,
    /// Most connections tracked at once; beyond it the oldest is evicted (and counted).
    pub max_connections: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            // Enough for the head of nearly every request; matches what BPF copies from one read.
            keep_head_bytes: 4096,
            // gunicorn's default keep-alive is 2 s; 5 minutes also covers slow streaming responses.
            idle_timeout_secs: 300,
            // Far above what 2-core hosts serve at once, small enough to bound memory (~64 KiB each at worst).
            max_connections: 16384,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProfilerConfig {
    /// Python stack samples per second of CPU time per thread (0 turns the profiler off).
    pub sample_hz: u64,
    /// Flask-MonitoringDashboard's `SAMPLING_PERIOD`, in milliseconds: when set, it gives the rate
    /// (`1000 / sampling_period_ms` samples per second) so an FMD configuration carries over.
    pub sampling_period_ms: Option<u64>,
    /// `wall` (on-CPU samples plus off-CPU waits) or `cpu` (on-CPU only).
    pub mode: crate::profile::ProfileMode,
}

impl Default for ProfilerConfig {
    fn default() -> Self {
        Self {
            // py-spy's rate: a 100 ms request gets about 10 CPU samples, at well under 1% CPU.
            sample_hz: 100,
            sampling_period_ms: None,
            // Like FMD's own sampler, which sees waiting threads too.
            mode: crate::profile::ProfileMode::Wall,
        }
    }
}

impl Config {
    /// Reads `path`; a missing *default* file means defaults, a missing explicit one is an error.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            Err(source) => return Err(Error::Read { path, source }),
        };
        let mut config: Self = toml::from_str(&text).map_err(|source| Error::Parse {
            path: path.clone(),
            source,
        })?;
        if let Some(ms) = config.profiler.sampling_period_ms {
            if ms == 0 {
                return Err(Error::Invalid {
                    key: "profiler.sampling_period_ms",
                    reason: "must be at least 1".into(),
                });
            }
            config.profiler.sample_hz = (1000 + ms / 2) / ms;
        }
        // Like FMD's GIT, a relative path is relative to the configuration file.
        if let (Some(git), Some(dir)) = (&config.git, path.parent()) {
            if git.is_relative() {
                config.git = Some(dir.join(git));
            }
        }
        Ok(config)
    }

    /// The level endpoints get when first seen: `monitor_level`, else 3 with the profiler on, else 1.
    pub fn default_level(&self) -> u8 {
        self.monitor_level
            .unwrap_or_else(|| crate::levels::default_for(self.profiler.sample_hz))
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.capture.max_connections == 0 {
            return Err(Error::Invalid {
                key: "capture.max_connections",
                reason: "must be at least 1".into(),
            });
        }
        if self.capture.idle_timeout_secs == 0 {
            return Err(Error::Invalid {
                key: "capture.idle_timeout_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.profiler.sample_hz > 10_000 {
            return Err(Error::Invalid {
                key: "profiler.sample_hz",
                reason: "must be at most 10000".into(),
            });
        }
        if self.monitor_level.is_some_and(|l| l > crate::levels::MAX) {
            return Err(Error::Invalid {
                key: "monitor_level",
                reason: "must be 0, 1, 2 or 3".into(),
            });
        }
        let c = self.outlier_detection_constant;
        if !c.is_finite() || c <= 0.0 {
            return Err(Error::Invalid {
                key: "outlier_detection_constant",
                reason: "must be a positive number".into(),
            });
        }
        if !valid_base_path(&self.base_path) {
            return Err(Error::Invalid {
                key: "base_path",
                reason: format!(
                    "{:?} must be empty or a path like /fmd (a leading /, no trailing /, no ?, # or spaces)",
                    self.base_path
                ),
            });
        }
        if self.db.as_os_str().is_empty() {
            return Err(Error::Invalid {
                key: "db",
                reason: "must be a file path".into(),
            });
        }
        Ok(())
    }
}

/// A base path as [`Config::base_path`] takes it, after [`normalize_base_path`].
fn valid_base_path(base: &str) -> bool {
    base.is_empty()
        || (base.starts_with('/')
            && !base.ends_with('/')
            && !base.contains("//")
            && !base.contains(|c: char| {
                c.is_whitespace() || matches!(c, '?' | '#' | '"' | '<' | '>' | '\\')
            }))
}

/// "/fmd/" and "fmd" mean "/fmd"; "/" means the root.
pub fn normalize_base_path(base: &str) -> String {
    let trimmed = base.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str, expect: Result<Config, &str>) {
        let parsed: Result<Config, _> = toml::from_str(toml_text);
        match (parsed, expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn files() {
        check("", Ok(Config::default()));
        check(
            "db = \"/tmp/x.duckdb\"\n[capture]\nidle_timeout_secs = 9",
            Ok(Config {
                db: "/tmp/x.duckdb".into(),
                capture: CaptureConfig {
                    idle_timeout_secs: 9,
                    ..CaptureConfig::default()
                },
                ..Config::default()
            }),
        );
        check("dbb = 1", Err("unknown field"));
        check("listen = \"not an address\"", Err("invalid socket address"));
    }

    #[test]
    fn fmd_names_for_levels_and_outliers() {
        let c: Config = toml::from_str("MONITOR_LEVEL = 2\nOUTLIER_DETECTION_CONSTANT = 3.5\n")
            .expect("FMD's names");
        assert_eq!(
            (c.monitor_level, c.outlier_detection_constant),
            (Some(2), 3.5)
        );
        let c: Config = toml::from_str("monitor_level = 4").expect("parses");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("monitor_level"));
        let c: Config = toml::from_str("outlier_detection_constant = 0.0").expect("parses");
        assert!(c.validate().is_err());
    }

    /// The level endpoints get when first seen.
    #[test]
    fn default_level_follows_the_profiler() {
        let mut c = Config::default();
        assert_eq!(c.default_level(), 3);
        c.profiler.sample_hz = 0;
        assert_eq!(c.default_level(), 1);
        c.monitor_level = Some(0);
        assert_eq!(c.default_level(), 0);
    }

    #[test]
    fn base_paths() {
        for (input, normal, valid) in [
            ("", "", true),
            ("/", "", true),
            ("/fmd", "/fmd", true),
            ("fmd/", "/fmd", true),
            ("/tools/fmd/", "/tools/fmd", true),
            ("/a b", "/a b", false),
            ("/x?y", "/x?y", false),
            ("/a//b", "/a//b", false),
        ] {
            let got = normalize_base_path(input);
            assert_eq!(got, normal, "{input:?}");
            assert_eq!(valid_base_path(&got), valid, "{input:?}");
        }
    }

    #[test]
    fn validation() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.capture.max_connections = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("capture.max_connections"));
    }

    #[test]
    fn fmd_sampling_period_sets_the_rate() {
        let dir = std::env::temp_dir().join(format!("fmd-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("fmd.toml");
        for (ms, hz) in [(5, 200), (10, 100), (3, 333), (1000, 1)] {
            std::fs::write(&file, format!("[profiler]\nsampling_period_ms = {ms}\n"))
                .expect("write");
            assert_eq!(
                Config::load(Some(&file)).expect("load").profiler.sample_hz,
                hz,
                "{ms} ms"
            );
        }
        std::fs::write(&file, "[profiler]\nsampling_period_ms = 0\n").expect("write");
        assert!(Config::load(Some(&file)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn versions_users_and_proxies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fmd.toml");
        std::fs::write(
            &file,
            "app_version = \"1.2\"\ngit = \"app/.git\"\n[users]\nextract = [{ from = \"header\", name = \"X-User\" }]\n\
             [proxies]\ntrusted = [\"10.0.0.0/8\"]\n",
        )
        .expect("write");
        let c = Config::load(Some(&file)).expect("load");
        assert_eq!(c.app_version.as_deref(), Some("1.2"));
        assert_eq!(c.git, Some(dir.path().join("app/.git")));
        assert_eq!(c.users.extract.len(), 1);
        assert_eq!(c.proxies.trusted.len(), 1);
    }

    #[test]
    fn missing_default_file_means_defaults_but_missing_explicit_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/fmd.toml"))).is_err());
    }
}
