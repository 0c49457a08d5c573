//! The recogniser against real tracebacks of CPython 3.8 to 3.13 (`testdata/gen.py` wrote them, with
//! what the `traceback` module itself says they contain), plus the cases logs add around them.

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Fixture {
    python: String,
    writes: Vec<String>,
    expected: Vec<Vec<Exception>>,
}

const FIXTURES: &[(&str, &str)] = &[
    ("py38", include_str!("../testdata/py38.json")),
    ("py39", include_str!("../testdata/py39.json")),
    ("py310", include_str!("../testdata/py310.json")),
    ("py311", include_str!("../testdata/py311.json")),
    ("py312", include_str!("../testdata/py312.json")),
    ("py313", include_str!("../testdata/py313.json")),
];

fn chains(found: Vec<Traceback>) -> Vec<Vec<Exception>> {
    found.into_iter().map(|t| t.chain).collect()
}

/// Feeds `writes` in pieces of `piece` bytes (0: whole writes), ending each write.
fn recognise(writes: &[&str], piece: usize) -> Vec<Vec<Exception>> {
    let mut r = Recogniser::default();
    for w in writes {
        if piece == 0 {
            r.feed(w.as_bytes());
        } else {
            for p in w.as_bytes().chunks(piece) {
                r.feed(p);
            }
        }
        r.end_of_write();
    }
    chains(r.finish())
}

#[test]
fn real_tracebacks_of_every_supported_python() {
    for (name, text) in FIXTURES {
        let fixture: Fixture = serde_json::from_str(text).expect(name);
        let writes: Vec<&str> = fixture.writes.iter().map(String::as_str).collect();
        assert_eq!(fixture.expected.len(), 11, "{name}");
        for piece in [0, 1, 7, 4096] {
            let found = recognise(&writes, piece);
            assert_eq!(
                found.len(),
                fixture.expected.len(),
                "{name} ({}) in pieces of {piece}",
                fixture.python
            );
            for (got, want) in found.iter().zip(&fixture.expected) {
                assert_eq!(
                    got, want,
                    "{name} ({}) in pieces of {piece}",
                    fixture.python
                );
            }
        }
    }
}

#[test]
fn carets_are_not_source_lines() {
    let found = recognise(
        &["Traceback (most recent call last):\n  File \"/app/a.py\", line 3, in f\n    return d[\"k\"]\n           ~^^^^^\nKeyError: 'k'\n"],
        0,
    );
    assert_eq!(
        found[0][0].frames[0].code.as_deref(),
        Some("return d[\"k\"]")
    );
}

fn one(text: &str) -> Vec<Vec<Exception>> {
    recognise(&[text], 0)
}

#[test]
fn a_prefix_before_the_header_is_allowed() {
    // SysLogHandler: one datagram, a priority before the record, a NUL after it.
    let found = one("<11>Exception on /x [GET]\nTraceback (most recent call last):\n  File \"/app/a.py\", line 1, in <module>\nValueError: v\n\0");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0][0].type_name.as_str(), found[0][0].message.as_str()),
        ("ValueError", "v")
    );
    // Without the newline (SysLogHandler appends only the NUL): the datagram still ends the message.
    let found = recognise(
        &[
            "<11>Exception on /x [GET]\nTraceback (most recent call last):\n  File \"/app/a.py\", line 1, in <module>\nValueError: v\0",
            "<14>next record",
        ],
        0,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0][0].message, "v");
}

#[test]
fn a_write_cut_mid_line_continues_in_the_next() {
    let text =
        "Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\nKeyError: 'missing'\n";
    for cut in 1..text.len() {
        let (a, b) = text.split_at(cut);
        let found = recognise(&[a, b], 0);
        assert_eq!(found.len(), 1, "cut at {cut}");
        assert_eq!(
            (found[0][0].type_name.as_str(), found[0][0].message.as_str()),
            ("KeyError", "'missing'"),
            "cut at {cut}"
        );
    }
}

#[test]
fn lines_after_the_write_are_not_the_message() {
    let found = recognise(
        &[
            "Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\nValueError: one\n",
            "[2026-01-01] INFO in app: next request\n",
        ],
        0,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0][0].message, "one");
}

#[test]
fn interleaved_output_drops_the_traceback_and_counts_it() {
    let mut r = Recogniser::default();
    r.feed(
        b"Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\n[2026] INFO: other\n",
    );
    r.end_of_write();
    assert!(r.finish().is_empty());
    assert_eq!(r.counters.incomplete, 1);
}

#[test]
fn a_gap_drops_the_traceback_in_progress() {
    let mut r = Recogniser::default();
    r.feed(b"Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\n    x(");
    r.gap();
    r.feed(b"more)\nKeyError: 'k'\n");
    r.end_of_write();
    assert!(r.finish().is_empty());
    assert_eq!(r.counters.incomplete, 1);
}

#[test]
fn a_traceback_cut_before_its_exception_line_is_counted() {
    let mut r = Recogniser::default();
    r.feed(b"Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\n");
    assert!(r.finish().is_empty());
    assert_eq!(r.counters.incomplete, 1);
    assert!(r.is_idle());
}

#[test]
fn long_lines_are_bounded() {
    let mut r = Recogniser::default();
    let long = "x".repeat(3 * MAX_LINE);
    r.feed(format!("Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\n    {long}\nValueError: {long}\n").as_bytes());
    let found = r.finish();
    assert_eq!(found.len(), 1);
    assert!(found[0].chain[0].message.len() <= MAX_MESSAGE);
    assert_eq!(r.counters.long_lines, 2);
}

#[test]
fn exception_group_top_level() {
    let text = "  + Exception Group Traceback (most recent call last):\n\
                |   File \"/app/a.py\", line 5, in view\n\
                |     raise ExceptionGroup(\"many\", [ValueError(1), TypeError(2)])\n\
                | ExceptionGroup: many (2 sub-exceptions)\n\
                +-+---------------- 1 ----------------\n\
                  | ValueError: 1\n\
                  +---------------- 2 ----------------\n\
                  | TypeError: 2\n\
                  +------------------------------------\n";
    // Python indents each of these lines by two spaces (lost to the string continuation above).
    let text: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l}\n")
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    let found = one(&text);
    assert_eq!(found.len(), 1, "{text}");
    let e = &found[0][0];
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str(), e.frames.len()),
        ("ExceptionGroup", "many (2 sub-exceptions)", 1)
    );
    assert_eq!(e.frames[0].function, "view");
}

#[test]
fn exception_lines() {
    for (line, want) in [
        ("KeyError: 'k'", Some(("KeyError", "'k'"))),
        ("ValueError", Some(("ValueError", ""))),
        (
            "werkzeug.exceptions.BadRequest: 400 Bad Request",
            Some(("werkzeug.exceptions.BadRequest", "400 Bad Request")),
        ),
        ("[2026-01-01 10:00:00] ERROR in app: boom", None),
        ("INFO:root:hello", None),
        ("", None),
    ] {
        assert_eq!(parse_exception_line(line), want, "{line}");
    }
}
