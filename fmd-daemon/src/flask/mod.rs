//! Flask knowledge that turns a raw request into "which view served it": the app's route table read from
//! a worker's memory (`app`), matched with Werkzeug's rules (`matcher`), or, when no table can be read,
//! bounded path templates (`templates`); `attribution` puts them together per worker.

use serde::{Deserialize, Serialize};

pub mod app;
pub mod attribution;
pub mod matcher;
pub mod templates;

/// One rule of a Flask app's `url_map`, as read from the running app (`app.url_map.iter_rules()`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteInfo {
    /// The rule template, e.g. `/user/<int:id>`.
    pub rule: String,
    /// The endpoint name, e.g. `users.show` for a blueprint view.
    pub endpoint: String,
    /// `rule.methods`; Flask already includes `HEAD` and `OPTIONS` there. Empty means "any method"
    /// (a Werkzeug rule with `methods=None`).
    pub methods: Vec<String>,
    /// `rule.strict_slashes` as resolved when the rule was bound to the map.
    pub strict_slashes: bool,
    /// `rule.host`, used when the map does host matching.
    pub host: Option<String>,
    /// `rule.subdomain`; `None` means the map's default subdomain.
    pub subdomain: Option<String>,
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::RouteInfo;

    /// A rule as Flask binds it by default (strict slashes, no host or subdomain).
    pub fn route(endpoint: &str, rule: &str, methods: &[&str]) -> RouteInfo {
        RouteInfo {
            rule: rule.into(),
            endpoint: endpoint.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            strict_slashes: true,
            host: None,
            subdomain: None,
        }
    }
}
