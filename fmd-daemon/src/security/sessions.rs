//! The dashboard's sessions, kept in memory: a daemon restart logs everyone out, which costs a login and
//! keeps session secrets out of the store file. Each session has a random id (the cookie) and its own
//! CSRF token; it ends after [`IDLE`] without a request, after [`MAX_AGE`] in any case, at logout, or
//! when its account is removed.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{secret, Error};

/// A session unused this long is over (a working day with breaks).
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// No session lives longer than this, however busy.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Beyond this many live sessions the least recently used one is dropped, so logins cannot grow memory
/// without bound.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    pub admin: bool,
    pub csrf_token: String,
    created: Instant,
    last_seen: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    // Keyed by the session id: 256 random bits behind a SipHash map with a random key, so lookup time
    // gives nothing away about other ids.
    by_id: HashMap<String, Session>,
}

impl Sessions {
    /// Starts a session; returns its id (for the cookie) and the session.
    pub fn create(
        &mut self,
        username: &str,
        admin: bool,
        now: Instant,
    ) -> Result<(String, Session), Error> {
        self.expire(now);
        if self.by_id.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
            {
                self.by_id.remove(&oldest);
            }
        }
        let id = secret::random_token()?;
        let session = Session {
            username: username.to_owned(),
            admin,
            csrf_token: secret::random_token()?,
            created: now,
            last_seen: now,
        };
        self.by_id.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session `id`, marked as used at `now`; an expired one is forgotten.
    pub fn touch(&mut self, id: &str, now: Instant) -> Option<Session> {
        let session = self.by_id.get_mut(id)?;
        if is_expired(session, now) {
            self.by_id.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    pub fn remove(&mut self, id: &str) -> bool {
        self.by_id.remove(id).is_some()
    }

    /// Ends every session of `username` except `keep` (the caller's own, when it changes its password).
    pub fn remove_user(&mut self, username: &str, keep: Option<&str>) {
        self.by_id
            .retain(|id, s| s.username != username || keep == Some(id.as_str()));
    }

    /// An account's role changed: its sessions get the new one at once.
    pub fn set_admin(&mut self, username: &str, admin: bool) {
        for session in self.by_id.values_mut().filter(|s| s.username == username) {
            session.admin = admin;
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        self.by_id.retain(|_, s| !is_expired(s, now));
    }
}

fn is_expired(session: &Session, now: Instant) -> bool {
    now.saturating_duration_since(session.last_seen) >= IDLE
        || now.saturating_duration_since(session.created) >= MAX_AGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let t0 = Instant::now();
        let mut sessions = Sessions::default();
        let (id, s) = sessions.create("alice", true, t0).expect("create");
        assert_eq!((s.username.as_str(), s.admin), ("alice", true));
        assert_ne!(id, s.csrf_token);
        assert_eq!(
            sessions.touch(&id, t0 + IDLE / 2),
            Some(s.clone()).map(|mut s| {
                s.last_seen = t0 + IDLE / 2;
                s
            })
        );
        // Used half way: still alive a full idle period after the start.
        assert!(sessions.touch(&id, t0 + IDLE).is_some());
        assert!(sessions.touch("nope", t0).is_none());
        // Idle too long.
        assert!(sessions
            .touch(&id, t0 + IDLE * 2 + Duration::from_secs(1))
            .is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn max_age_ends_even_a_busy_session() {
        let t0 = Instant::now();
        let mut sessions = Sessions::default();
        let (id, _) = sessions.create("bob", false, t0).expect("create");
        let mut t = t0;
        while t < t0 + MAX_AGE - IDLE {
            t += IDLE / 2;
            assert!(sessions.touch(&id, t).is_some());
        }
        assert!(sessions.touch(&id, t0 + MAX_AGE).is_none());
    }

    #[test]
    fn per_user_changes() {
        let t0 = Instant::now();
        let mut sessions = Sessions::default();
        let (a1, _) = sessions.create("alice", false, t0).expect("create");
        let (a2, _) = sessions.create("alice", false, t0).expect("create");
        let (b, _) = sessions.create("bob", false, t0).expect("create");
        sessions.set_admin("alice", true);
        assert!(sessions.touch(&a1, t0).expect("a1").admin);
        assert!(!sessions.touch(&b, t0).expect("b").admin);
        sessions.remove_user("alice", Some(&a2));
        assert!(sessions.touch(&a1, t0).is_none());
        assert!(sessions.touch(&a2, t0).is_some());
        assert!(sessions.remove(&b));
        assert!(!sessions.remove(&b));
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut sessions = Sessions::default();
        let (first, _) = sessions.create("u", false, t0).expect("create");
        for i in 1..=MAX_SESSIONS {
            let t = t0 + Duration::from_millis(i as u64);
            sessions.create("u", false, t).expect("create");
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions.touch(&first, t0).is_none(),
            "the least recently used one goes"
        );
    }
}
