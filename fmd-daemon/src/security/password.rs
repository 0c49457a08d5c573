//! Password hashing with Argon2id (RFC 9106) at the `argon2` crate's defaults, OWASP's minimum (19 MiB,
//! 2 passes): a stolen store does not give the passwords away. Hashes are PHC strings, so parameters
//! can be raised later and old hashes still verify.

use std::sync::OnceLock;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Argon2,
};

use super::Error;

/// NIST SP 800-63B's minimum for passwords a user chooses.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Bounds the work one login can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes `password` with a new random salt. Takes tens of milliseconds of CPU on purpose: call it off
/// the async runtime.
pub fn hash(password: &str) -> Result<String, Error> {
    // 16 bytes: RFC 9106's recommended salt length.
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    let salt = SaltString::encode_b64(&bytes).map_err(Error::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::Hash)
}

/// Whether `password` matches `stored` (a PHC string from [`hash`]); a malformed hash matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        tracing::warn!("a stored password hash is malformed: that account cannot log in");
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Spends the time of a real verification for a username that does not exist, so response times do not
/// tell which usernames exist.
pub fn verify_nobody(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(dummy) = DUMMY.get_or_init(|| hash("no account has this password").ok()) {
        let _ = verify(password, dummy);
    }
}

/// A username fit for URLs, logs and tables.
pub fn check_username(username: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadUsername {
            username: username.to_owned(),
        })
    }
}

pub fn check_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::ShortPassword {
            min: MIN_PASSWORD_CHARS,
        });
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::LongPassword {
            max: MAX_PASSWORD_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let stored = hash("correct horse").expect("hash");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct horsf", &stored));
        assert!(!verify("correct horse", "not a hash"));
        // A new salt each time.
        assert_ne!(hash("correct horse").expect("hash"), stored);
        verify_nobody("anything");
    }

    #[test]
    fn usernames() {
        for (name, ok) in [
            ("alice", true),
            ("a.b-c_d@example.org", true),
            ("", false),
            ("has space", false),
            ("slash/", false),
            ("é", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ] {
            assert_eq!(check_username(name).is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn passwords() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password("éééééééé").is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }
}
