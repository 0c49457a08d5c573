//! Flask-MonitoringDashboard's outliers: a request slower than `outlier_detection_constant` times its
//! endpoint's running average, kept with where it spent its time (a stack trimmed to the view), the
//! machine's state at that moment and the request's values, headers and WSGI environment. Requests still
//! running past the threshold get live stack snapshots. Pure logic here; the daemon feeds it.

pub mod context;
pub mod monitor;
pub mod snapshot;
pub mod system;

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// FMD's `OUTLIER_DETECTION_CONSTANT`.
pub const DEFAULT_CONSTANT: f64 = 2.5;
/// Requests an endpoint needs before its average is trusted: the first requests of a fresh endpoint
/// (imports, caches warming) would otherwise all be outliers of each other.
pub const MIN_REQUESTS: u64 = 10;

/// One frame of an outlier's stack, outermost first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackFrame {
    pub function: String,
    pub file: String,
    pub line: i32,
    /// The line's source text, when the file was readable.
    pub code: Option<String>,
}

/// An endpoint's running average duration.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Average {
    pub requests: u64,
    pub mean_ms: f64,
}

impl Average {
    pub fn add(&mut self, ms: f64) {
        self.requests += 1;
        // Welford's update: no sum that grows without bound.
        self.mean_ms += (ms - self.mean_ms) / self.requests as f64;
    }
}

/// The running averages of every endpoint and the outlier test against them.
#[derive(Debug)]
pub struct Detector {
    constant: f64,
    averages: HashMap<String, Average>,
    /// Endpoints whose average changed since [`Detector::take_changed`].
    changed: HashSet<String>,
}

impl Detector {
    /// `averages` are the stored ones, so they survive restarts.
    pub fn new(constant: f64, averages: HashMap<String, Average>) -> Self {
        Self {
            constant,
            averages,
            changed: HashSet::new(),
        }
    }

    /// The outlier threshold of `endpoint` in milliseconds, once its average is trusted.
    pub fn threshold_ms(&self, endpoint: &str) -> Option<f64> {
        self.averages
            .get(endpoint)
            .filter(|a| a.requests >= MIN_REQUESTS)
            .map(|a| a.mean_ms * self.constant)
    }

    /// Adds a finished request to its endpoint's average; its threshold (taken before the request is
    /// counted) when the request is an outlier.
    pub fn observe(&mut self, endpoint: &str, duration_ms: f64) -> Option<f64> {
        let outlier = self
            .threshold_ms(endpoint)
            .filter(|&threshold| duration_ms > threshold);
        match self.averages.get_mut(endpoint) {
            Some(a) => a.add(duration_ms),
            None => {
                let mut a = Average::default();
                a.add(duration_ms);
                self.averages.insert(endpoint.to_owned(), a);
            }
        }
        if !self.changed.contains(endpoint) {
            self.changed.insert(endpoint.to_owned());
        }
        outlier
    }

    /// The averages changed since the last call, to be stored.
    pub fn take_changed(&mut self) -> Vec<(String, Average)> {
        self.changed
            .drain()
            .filter_map(|e| {
                let a = *self.averages.get(&e)?;
                Some((e, a))
            })
            .collect()
    }
}

/// The part of a stack under the view function: Flask's `dispatch_request` calls the view, so the
/// frames after its last occurrence are the view's; without it (not Flask, or a truncated stack) all.
/// Python 3.11+ names methods by their qualified name (`Flask.dispatch_request`), older ones by the bare one.
pub fn trim_to_view(frames: Vec<StackFrame>) -> Vec<StackFrame> {
    let is_dispatch =
        |name: &str| name == "dispatch_request" || name.ends_with(".dispatch_request");
    let dispatch = frames
        .iter()
        .rposition(|f| is_dispatch(&f.function) && f.file.contains("flask"));
    match dispatch {
        Some(i) if i + 1 < frames.len() => frames.into_iter().skip(i + 1).collect(),
        _ => frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str) -> StackFrame {
        StackFrame {
            function: function.into(),
            file: file.into(),
            line: 1,
            code: None,
        }
    }

    #[test]
    fn running_average_and_threshold() {
        let mut d = Detector::new(2.5, HashMap::new());
        // Not trusted before MIN_REQUESTS: nothing is an outlier yet, however slow.
        for _ in 0..MIN_REQUESTS - 1 {
            assert_eq!(d.observe("e", 4.0), None);
        }
        assert_eq!(d.observe("e", 500.0), None);
        // Mean is (9 * 4 + 500) / 10 = 53.6: threshold 134.
        let t = d.threshold_ms("e").expect("trusted");
        assert!((t - 134.0).abs() < 1e-9, "{t}");
        assert_eq!(d.observe("e", 134.0), None, "equal is not above");
        assert!(d.observe("e", 200.0).is_some());
        assert_eq!(d.threshold_ms("other"), None);
        let changed = d.take_changed();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].1.requests, MIN_REQUESTS + 2);
        assert!(d.take_changed().is_empty());
    }

    #[test]
    fn stored_averages_carry_over() {
        let d = Detector::new(
            2.0,
            HashMap::from([(
                "e".to_owned(),
                Average {
                    requests: 100,
                    mean_ms: 10.0,
                },
            )]),
        );
        assert_eq!(d.threshold_ms("e"), Some(20.0));
    }

    #[test]
    fn stacks_are_trimmed_to_the_view() {
        let stack = vec![
            frame("<module>", "/venv/bin/gunicorn"),
            frame("full_dispatch_request", "/venv/lib/flask/app.py"),
            frame("Flask.dispatch_request", "/venv/lib/flask/app.py"),
            frame("view", "/app/app.py"),
            frame("helper", "/app/app.py"),
        ];
        let trimmed = trim_to_view(stack.clone());
        let names: Vec<_> = trimmed.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["view", "helper"]);
        let not_flask = vec![frame("dispatch_request", "/app/mine.py"), frame("x", "/a")];
        assert_eq!(trim_to_view(not_flask.clone()), not_flask);
    }
}
