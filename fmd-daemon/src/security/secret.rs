//! Random secrets (session ids, CSRF tokens, the setup and local tokens) and their comparison in constant
//! time, so how long a check takes tells nothing about how much of a guess was right.

use subtle::ConstantTimeEq as _;

use super::Error;

/// Bytes of randomness in every secret: 256 bits, beyond guessing.
const BYTES: usize = 32;

/// A new secret from the operating system's generator, as 64 lowercase hex digits (safe in cookies,
/// headers, URLs and file names).
pub fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; BYTES];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `given` equals `expected`, in time that depends only on their lengths.
pub fn same(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_hex_and_differ() {
        let a = random_token().expect("token");
        let b = random_token().expect("token");
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn comparison() {
        for (given, expected, equal) in [
            ("abc", "abc", true),
            ("abd", "abc", false),
            ("ab", "abc", false),
            ("", "abc", false),
            ("", "", true),
        ] {
            assert_eq!(same(given, expected), equal, "{given:?} vs {expected:?}");
        }
    }
}
