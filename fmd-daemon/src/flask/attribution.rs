//! Gives every captured request its Flask endpoint and rule. Each worker's route table (read from its
//! memory, so a worker running new code brings new rules) is matched with Werkzeug's semantics; where no
//! table can be read, paths are grouped into bounded templates instead. A worker's first requests can
//! complete before its table is read (gunicorn imports the app after forking): they wait, bounded in
//! number and time, then fall back to templates.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    matcher::{self, MapOptions, Matcher},
    templates::Templater,
    RouteInfo,
};
use crate::request::Request;

/// How requests are being attributed, shown by the CLI and the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No worker's table has been read yet.
    #[default]
    Pending,
    /// Flask endpoints from the app's route table.
    FlaskRoutes,
    /// No route table could be read: endpoints are path templates (`GET /users/<int>`).
    PathTemplates,
}

/// Bounds on requests waiting for their worker's route table.
const MAX_WAITING: usize = 20_000;
const MAX_WAIT: Duration = Duration::from_secs(15);
/// Distinct literal values per path position before the templater collapses them to `<*>`.
const TEMPLATE_CARDINALITY: usize = 50;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Requests matched to a Flask endpoint.
    pub routed: u64,
    /// Requests the app answers without a view (404, 405, trailing-slash redirect).
    pub unrouted: u64,
    /// Requests given a path template because their worker's routes were unknown.
    pub templated: u64,
}

enum Table {
    /// A read is under way; requests wait for it.
    Reading,
    Routes(Arc<Matcher>),
    Unavailable,
}

pub struct Attributor {
    tables: HashMap<u32, Table>,
    waiting: VecDeque<(Instant, Request)>,
    templater: Templater,
    counters: Counters,
    /// The last table built, reused when a new worker reports the same routes.
    last: Option<(Vec<RouteInfo>, MapOptions, Arc<Matcher>)>,
}

impl Default for Attributor {
    fn default() -> Self {
        Self {
            tables: HashMap::new(),
            waiting: VecDeque::new(),
            templater: Templater::new(TEMPLATE_CARDINALITY),
            counters: Counters::default(),
            last: None,
        }
    }
}

impl Attributor {
    /// A read of `pid`'s route table has started: its requests wait for it.
    pub fn reading(&mut self, pid: u32) {
        self.tables.insert(pid, Table::Reading);
    }

    /// `pid`'s route table is known; releases its waiting requests into `out`.
    pub fn set_routes(
        &mut self,
        pid: u32,
        routes: Vec<RouteInfo>,
        options: MapOptions,
        out: &mut Vec<Request>,
    ) -> Result<usize, matcher::Error> {
        let matcher = match &self.last {
            Some((r, o, m)) if *r == routes && *o == options => m.clone(),
            _ => {
                let m = Arc::new(Matcher::new(&routes, options.clone())?);
                self.last = Some((routes, options, m.clone()));
                m
            }
        };
        let count = matcher.rule_count();
        self.tables.insert(pid, Table::Routes(matcher));
        self.release(|p| p == pid, out);
        Ok(count)
    }

    /// `pid`'s routes cannot be read (not Flask, unsupported version): its requests get path templates.
    pub fn set_unavailable(&mut self, pid: u32, out: &mut Vec<Request>) {
        self.tables.insert(pid, Table::Unavailable);
        self.release(|p| p == pid, out);
    }

    /// The worker exited; later requests of a reused pid must not use its table.
    pub fn forget(&mut self, pid: u32, out: &mut Vec<Request>) {
        self.release(|p| p == pid, out);
        self.tables.remove(&pid);
    }

    /// Attributes `req` into `out`, or keeps it until its worker's table is read.
    pub fn push(&mut self, mut req: Request, now: Instant, out: &mut Vec<Request>) {
        if matches!(self.tables.get(&req.worker_pid), Some(Table::Reading))
            && self.waiting.len() < MAX_WAITING
        {
            self.waiting.push_back((now, req));
            return;
        }
        self.attribute(&mut req);
        out.push(req);
    }

    /// Releases requests that waited too long (their table never came) with path templates.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Request>) {
        while self
            .waiting
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= MAX_WAIT)
        {
            if let Some((_, mut req)) = self.waiting.pop_front() {
                self.template(&mut req);
                out.push(req);
            }
        }
    }

    /// Everything still waiting, for shutdown.
    pub fn finish(&mut self, out: &mut Vec<Request>) {
        self.release(|_| true, out);
    }

    /// The endpoint a request still being served will get, without counting it: for its level and its
    /// threshold while it runs. `None` while its worker's table is being read, or when it matches no rule.
    pub fn endpoint_of(&mut self, req: &Request) -> Option<String> {
        match self.tables.get(&req.worker_pid) {
            Some(Table::Routes(matcher)) => {
                matcher
                    .route(&req.method, &req.path, req.host.as_deref())
                    .attribution()
                    .0
            }
            Some(Table::Reading) => None,
            _ => Some(format!(
                "{} {}",
                req.method,
                self.templater.template(&req.path)
            )),
        }
    }

    pub fn mode(&self) -> Mode {
        let mut mode = Mode::Pending;
        for table in self.tables.values() {
            match table {
                Table::Routes(_) => return Mode::FlaskRoutes,
                Table::Unavailable => mode = Mode::PathTemplates,
                Table::Reading => {}
            }
        }
        mode
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Routes of the most recently read table (all endpoints of the app, requested or not).
    pub fn routes(&self) -> Option<&[RouteInfo]> {
        self.last.as_ref().map(|(r, _, _)| r.as_slice())
    }

    fn release(&mut self, which: impl Fn(u32) -> bool, out: &mut Vec<Request>) {
        let (go, stay): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, r)| which(r.worker_pid));
        self.waiting = stay;
        for (_, mut req) in go {
            self.attribute(&mut req);
            out.push(req);
        }
    }

    fn attribute(&mut self, req: &mut Request) {
        match self.tables.get(&req.worker_pid) {
            Some(Table::Routes(matcher)) => {
                let (endpoint, rule) = matcher
                    .route(&req.method, &req.path, req.host.as_deref())
                    .attribution();
                if endpoint.is_some() {
                    self.counters.routed += 1;
                } else {
                    self.counters.unrouted += 1;
                }
                req.endpoint = endpoint;
                req.rule = rule;
            }
            _ => self.template(req),
        }
    }

    fn template(&mut self, req: &mut Request) {
        let template = self.templater.template(&req.path);
        self.counters.templated += 1;
        req.endpoint = Some(format!("{} {template}", req.method));
        req.rule = Some(template);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flask::test_support::route;

    fn req(pid: u32, method: &str, path: &str) -> Request {
        Request {
            worker_pid: pid,
            method: method.into(),
            path: path.into(),
            ..Request::default()
        }
    }

    fn attributed(out: &[Request]) -> Vec<(String, Option<String>, Option<String>)> {
        out.iter()
            .map(|r| (r.path.clone(), r.endpoint.clone(), r.rule.clone()))
            .collect()
    }

    #[test]
    fn requests_wait_for_their_workers_routes_then_match() {
        let mut a = Attributor::default();
        let mut out = vec![];
        let t0 = Instant::now();
        a.reading(10);
        a.push(req(10, "GET", "/users/7"), t0, &mut out);
        a.push(req(10, "GET", "/nope"), t0, &mut out);
        assert!(out.is_empty(), "they wait for the table");
        assert_eq!(a.mode(), Mode::Pending);
        let routes = vec![route(
            "users.show",
            "/users/<int:id>",
            &["GET", "HEAD", "OPTIONS"],
        )];
        assert_eq!(
            a.set_routes(10, routes, MapOptions::default(), &mut out)
                .expect("table"),
            1
        );
        assert_eq!(
            attributed(&out),
            vec![
                (
                    "/users/7".into(),
                    Some("users.show".into()),
                    Some("/users/<int:id>".into())
                ),
                ("/nope".into(), None, None),
            ]
        );
        assert_eq!(a.mode(), Mode::FlaskRoutes);
        assert_eq!(
            a.counters(),
            Counters {
                routed: 1,
                unrouted: 1,
                templated: 0
            }
        );
    }

    #[test]
    fn unreadable_routes_fall_back_to_templates() {
        let mut a = Attributor::default();
        let mut out = vec![];
        a.reading(3);
        a.push(req(3, "GET", "/orders/123"), Instant::now(), &mut out);
        a.set_unavailable(3, &mut out);
        a.push(req(3, "POST", "/orders/456"), Instant::now(), &mut out);
        assert_eq!(
            attributed(&out),
            vec![
                (
                    "/orders/123".into(),
                    Some("GET /orders/<int>".into()),
                    Some("/orders/<int>".into())
                ),
                (
                    "/orders/456".into(),
                    Some("POST /orders/<int>".into()),
                    Some("/orders/<int>".into())
                ),
            ]
        );
        assert_eq!(a.mode(), Mode::PathTemplates);
    }

    #[test]
    fn waiting_is_bounded_in_time() {
        let mut a = Attributor::default();
        let mut out = vec![];
        let t0 = Instant::now();
        a.reading(5);
        a.push(req(5, "GET", "/a/1"), t0, &mut out);
        a.expire(t0 + MAX_WAIT / 2, &mut out);
        assert!(out.is_empty());
        a.expire(t0 + MAX_WAIT, &mut out);
        assert_eq!(
            attributed(&out),
            vec![(
                "/a/1".into(),
                Some("GET /a/<int>".into()),
                Some("/a/<int>".into())
            )]
        );
    }

    #[test]
    fn workers_with_new_code_get_their_own_table() {
        let mut a = Attributor::default();
        let mut out = vec![];
        let old = vec![route("a", "/a", &["GET"])];
        let new = vec![route("a", "/a", &["GET"]), route("b", "/b", &["GET"])];
        a.set_routes(1, old, MapOptions::default(), &mut out)
            .expect("old");
        a.set_routes(2, new, MapOptions::default(), &mut out)
            .expect("new");
        a.push(req(1, "GET", "/b"), Instant::now(), &mut out);
        a.push(req(2, "GET", "/b"), Instant::now(), &mut out);
        assert_eq!(
            attributed(&out),
            vec![
                ("/b".into(), None, None),
                ("/b".into(), Some("b".into()), Some("/b".into()))
            ]
        );
    }
}
