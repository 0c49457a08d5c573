//! Line tables captured from real interpreters (`testdata/linetables.py`) decoded at every byte offset.

use super::line_for;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex fixture"))
        .collect()
}

/// Every offset of every code object in the fixture must give the line CPython reported for it.
fn check(fixture: &str, minor: u8) {
    let doc: serde_json::Value = serde_json::from_str(fixture).expect("fixture is JSON");
    assert_eq!(doc["version"], format!("3.{minor}"));
    let mut checked = 0;
    for code in doc["code"].as_array().expect("code list") {
        let table = hex(code["table"].as_str().expect("table"));
        let first = code["firstlineno"].as_i64().expect("firstlineno") as i32;
        for pair in code["lines"].as_array().expect("lines") {
            let addr = pair[0].as_i64().expect("offset");
            let want = pair[1].as_i64().map(|l| l as i32);
            let got = line_for(minor, &table, first, addr);
            assert_eq!(got, want, "3.{minor} {} at byte {addr}", code["name"]);
            checked += 1;
        }
    }
    assert!(checked > 100, "3.{minor}: only {checked} offsets");
}

#[test]
fn real_tables() {
    check(include_str!("../testdata/linetables/3.8.json"), 8);
    check(include_str!("../testdata/linetables/3.9.json"), 9);
    check(include_str!("../testdata/linetables/3.10.json"), 10);
    check(include_str!("../testdata/linetables/3.11.json"), 11);
    check(include_str!("../testdata/linetables/debian3.11.json"), 11);
    check(include_str!("../testdata/linetables/3.12.json"), 12);
    check(include_str!("../testdata/linetables/3.13.json"), 13);
}

#[test]
fn before_first_instruction_and_garbage() {
    assert_eq!(line_for(12, &[], 7, -2), Some(7));
    assert_eq!(line_for(12, &[0x00, 0x01], 7, 0), None);
    assert_eq!(line_for(13, &[0xf0], 7, 4), None);
    assert_eq!(line_for(10, &[0x02], 7, 0), None);
}
