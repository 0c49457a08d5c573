//! The stable identity of an exception group: the types of a traceback's chain and its frames'
//! `file:function`, without line numbers (an edit above a frame must not split its group) and without
//! messages (`KeyError: 'a'` and `KeyError: 'b'` raised at the same place are one problem).

use super::traceback::Traceback;

/// 64-bit FNV-1a: tiny, and stable across Rust versions and builds (std's hasher is not promised to be),
/// so a group keeps its id in a store across daemon upgrades.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The group id of `tb`: 16 lowercase hex digits.
pub fn fingerprint(tb: &Traceback) -> String {
    let mut h = Fnv::new();
    for (i, e) in tb.chain.iter().enumerate() {
        if i > 0 {
            // The relation is part of the identity: "from e" and "during handling" are different code.
            h.write(match e.relation {
                Some(super::traceback::Relation::Cause) => b"\x1ecause\x1e",
                _ => b"\x1econtext\x1e",
            });
        }
        h.write(e.type_name.as_bytes());
        for f in &e.frames {
            h.write(b"\n");
            h.write(f.file.as_bytes());
            h.write(b":");
            h.write(f.function.as_bytes());
        }
    }
    format!("{:016x}", h.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exceptions::traceback::{Exception, Frame, Relation};

    fn tb(chain: &[(&str, &str, &[(&str, u32, &str)])]) -> Traceback {
        Traceback {
            chain: chain
                .iter()
                .enumerate()
                .map(|(i, (t, m, frames))| Exception {
                    type_name: (*t).to_owned(),
                    message: (*m).to_owned(),
                    frames: frames
                        .iter()
                        .map(|(file, line, function)| Frame {
                            file: (*file).to_owned(),
                            line: *line,
                            function: (*function).to_owned(),
                            code: Some(format!("line {line}")),
                        })
                        .collect(),
                    relation: (i > 0).then_some(Relation::Context),
                })
                .collect(),
            ts_ns: 0,
        }
    }

    const VIEW: &[(&str, u32, &str)] = &[("/app/app.py", 10, "view"), ("/app/app.py", 4, "helper")];

    #[test]
    fn same_place_and_type_is_one_group_whatever_the_message_and_lines() {
        let a = fingerprint(&tb(&[("KeyError", "'a'", VIEW)]));
        let moved: &[(&str, u32, &str)] =
            &[("/app/app.py", 12, "view"), ("/app/app.py", 5, "helper")];
        let b = fingerprint(&tb(&[("KeyError", "'b'", moved)]));
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        // Stable across builds: a store keeps its groups when the daemon is upgraded.
        assert_eq!(a, "e1028e1fb235b617");
    }

    #[test]
    fn type_function_file_and_chain_make_different_groups() {
        let base = fingerprint(&tb(&[("KeyError", "", VIEW)]));
        let other_fn: &[(&str, u32, &str)] =
            &[("/app/app.py", 10, "view"), ("/app/app.py", 4, "other")];
        let other_file: &[(&str, u32, &str)] =
            &[("/app/app.py", 10, "view"), ("/app/lib.py", 4, "helper")];
        let different = [
            fingerprint(&tb(&[("ValueError", "", VIEW)])),
            fingerprint(&tb(&[("KeyError", "", other_fn)])),
            fingerprint(&tb(&[("KeyError", "", other_file)])),
            fingerprint(&tb(&[("TypeError", "", VIEW), ("KeyError", "", VIEW)])),
        ];
        for d in &different {
            assert_ne!(&base, d);
        }
        let mut cause = tb(&[("TypeError", "", VIEW), ("KeyError", "", VIEW)]);
        cause.chain[1].relation = Some(Relation::Cause);
        assert_ne!(fingerprint(&cause), different[3]);
    }
}
