//! Flask-MonitoringDashboard's monitoring levels (0-3) per endpoint, as the running daemon applies them:
//! shared by the capture pipeline (which reads them per request) and the API (which changes them), so a
//! change takes effect at the next request, with no restart.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
};

/// Only the last-requested time moves; the request row is not stored (a counter is kept).
pub const LAST_REQUESTED: u8 = 0;
/// Every request is stored.
pub const REQUESTS: u8 = 1;
/// Plus outliers with their context.
pub const OUTLIERS: u8 = 2;
/// Plus a profile of every request.
pub const PROFILES: u8 = 3;

/// The highest level.
pub const MAX: u8 = PROFILES;

/// The default level: FMD's 3 while the sampler runs (profiles need it), else 1.
pub fn default_for(sample_hz: u64) -> u8 {
    if sample_hz > 0 {
        PROFILES
    } else {
        REQUESTS
    }
}

/// The levels of the endpoints seen so far, and the level an endpoint gets when first seen.
#[derive(Debug)]
pub struct Levels {
    default: u8,
    map: RwLock<HashMap<String, u8>>,
}

impl Levels {
    /// `known` are the stored levels (from earlier runs or set while the daemon was stopped).
    pub fn new(default: u8, known: HashMap<String, u8>) -> Self {
        Self {
            default: default.min(MAX),
            map: RwLock::new(known),
        }
    }

    pub fn default_level(&self) -> u8 {
        self.default
    }

    /// The level of `endpoint`; `true` in the second place when it was seen for the first time (and now
    /// has the default, to be stored).
    pub fn get_or_default(&self, endpoint: &str) -> (u8, bool) {
        if let Some(&level) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
        {
            return (level, false);
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        match map.get(endpoint) {
            Some(&level) => (level, false),
            None => {
                map.insert(endpoint.to_owned(), self.default);
                (self.default, true)
            }
        }
    }

    /// The level of `endpoint` without recording it.
    pub fn peek(&self, endpoint: &str) -> u8 {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
            .copied()
            .unwrap_or(self.default)
    }

    /// Whether `endpoint` has a level (seen by this daemon, or stored).
    pub fn known(&self, endpoint: &str) -> bool {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(endpoint)
    }

    pub fn set(&self, endpoint: &str, level: u8) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(endpoint.to_owned(), level.min(MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sight_gets_the_default_and_a_set_level_wins() {
        let levels = Levels::new(3, HashMap::from([("stored".to_owned(), 0)]));
        assert_eq!(levels.get_or_default("stored"), (0, false));
        assert_eq!(levels.get_or_default("new"), (3, true));
        assert_eq!(levels.get_or_default("new"), (3, false));
        levels.set("new", 1);
        assert_eq!(levels.peek("new"), 1);
        assert_eq!(levels.peek("unseen"), 3);
        assert_eq!(default_for(0), REQUESTS);
        assert_eq!(default_for(100), PROFILES);
    }
}
