//! `fmd-daemon query endpoints` output: every endpoint as an aligned table, JSON lines or CSV, and the
//! line (on stderr, with the table) that says whether endpoints are Flask's or path templates.

use std::io::{self, Write};

use super::query::{json_line, write_table, Format};
use crate::store::{modes, time::format_us, EndpointList, EndpointRow};

/// [`EndpointRow`]'s fields in order: the CSV header.
const ENDPOINT_FIELDS: [&str; 11] = [
    "endpoint",
    "rule",
    "methods",
    "hits",
    "hits_today",
    "hits_7d",
    "median_ms",
    "p90_ms",
    "error_rate",
    "last_requested",
    "monitor_level",
];

/// Writes `rows` in `format`. Table: the main columns, aligned, `-` for no value; JSON: every field, one
/// object per line; CSV: every field under a header named like the JSON fields, methods separated by
/// spaces, no value as an empty cell.
pub fn write_endpoints(
    rows: &[EndpointRow],
    format: Format,
    out: &mut dyn Write,
) -> io::Result<()> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    match format {
        Format::Json => rows.iter().try_for_each(|row| json_line(row, out)),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record(ENDPOINT_FIELDS)?;
            for r in rows {
                csv.write_record([
                    r.endpoint.clone(),
                    r.rule.clone(),
                    r.methods.join(" "),
                    r.hits.to_string(),
                    r.hits_today.to_string(),
                    r.hits_7d.to_string(),
                    opt(r.median_ms.map(|v| v.to_string())),
                    opt(r.p90_ms.map(|v| v.to_string())),
                    opt(r.error_rate.map(|v| v.to_string())),
                    opt(r.last_requested.map(format_us)),
                    r.monitor_level.to_string(),
                ])?;
            }
            csv.flush()
        }
        Format::Table | Format::Folded => {
            let header = [
                "endpoint",
                "rule",
                "methods",
                "hits",
                "today",
                "7d",
                "median_ms",
                "p90_ms",
                "errors",
                "last_requested",
                "level",
            ];
            let right = [
                false, false, false, true, true, true, true, true, true, false, true,
            ];
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.endpoint.clone(),
                        r.rule.clone(),
                        // Werkzeug's methods=None: any method.
                        if r.methods.is_empty() {
                            "*".to_owned()
                        } else {
                            r.methods.join(",")
                        },
                        r.hits.to_string(),
                        r.hits_today.to_string(),
                        r.hits_7d.to_string(),
                        dash(r.median_ms.map(|v| format!("{v:.3}"))),
                        dash(r.p90_ms.map(|v| format!("{v:.3}"))),
                        dash(r.error_rate.map(|v| format!("{:.1}%", v * 100.0))),
                        dash(r.last_requested.map(format_us)),
                        r.monitor_level.to_string(),
                    ]
                })
                .collect();
            write_table(&header, &right, &cells, out)
        }
    }
}

/// Where the endpoints come from, and how many requests matched none, as one line for people.
pub fn describe_endpoints(list: &EndpointList) -> String {
    let mut text = match list.mode.as_str() {
        modes::FLASK_ROUTES => format!(
            "endpoints from the Flask route table ({} rule{})",
            list.rules,
            if list.rules == 1 { "" } else { "s" }
        ),
        modes::PATH_TEMPLATES => {
            "no route table could be read: endpoints are path templates".to_owned()
        }
        modes::PENDING => "no route table read yet: endpoints are those recorded so far".to_owned(),
        other => format!("endpoints in mode {other}"),
    };
    if list.unmatched > 0 {
        text.push_str(&format!(
            "; {} request{} matched no endpoint (404, 405)",
            list.unmatched,
            if list.unmatched == 1 { "" } else { "s" }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T15:56:41.123456Z
    const NOW: i64 = 1_795_449_401_123_456;

    fn rows() -> Vec<EndpointRow> {
        vec![
            EndpointRow {
                endpoint: "users.show".into(),
                rule: "/users/<int:id>".into(),
                methods: vec!["GET".into(), "HEAD".into(), "OPTIONS".into()],
                hits: 1234,
                hits_today: 56,
                hits_7d: 789,
                median_ms: Some(1.5),
                p90_ms: Some(12.25),
                error_rate: Some(0.025),
                last_requested: Some(NOW),
                monitor_level: 1,
            },
            EndpointRow {
                endpoint: "never, \"quoted\"".into(),
                rule: "/n".into(),
                methods: vec![],
                hits: 0,
                hits_today: 0,
                hits_7d: 0,
                median_ms: None,
                p90_ms: None,
                error_rate: None,
                last_requested: None,
                monitor_level: 1,
            },
        ]
    }

    fn check(rows: &[EndpointRow], format: Format, expect: &str) {
        let mut out = Vec::new();
        write_endpoints(rows, format, &mut out).expect("write");
        assert_eq!(String::from_utf8(out).expect("utf-8"), expect, "{format:?}");
    }

    #[test]
    fn endpoints_as_table() {
        check(
            &rows(),
            Format::Table,
            "\
endpoint         rule             methods           hits  today   7d  median_ms  p90_ms  errors  last_requested               level
users.show       /users/<int:id>  GET,HEAD,OPTIONS  1234     56  789      1.500  12.250    2.5%  2026-11-23T15:56:41.123456Z      1
never, \"quoted\"  /n               *                    0      0    0          -       -       -  -                                1
",
        );
        check(
            &[],
            Format::Table,
            "endpoint  rule  methods  hits  today  7d  median_ms  p90_ms  errors  last_requested  level\n",
        );
    }

    #[test]
    fn endpoints_as_csv() {
        let header = "endpoint,rule,methods,hits,hits_today,hits_7d,median_ms,p90_ms,error_rate,last_requested,\
                      monitor_level\n";
        check(&[], Format::Csv, header);
        check(
            &rows(),
            Format::Csv,
            &format!(
                "{header}users.show,/users/<int:id>,GET HEAD OPTIONS,1234,56,789,1.5,12.25,0.025,\
                 2026-11-23T15:56:41.123456Z,1\n\"never, \"\"quoted\"\"\",/n,,0,0,0,,,,,1\n"
            ),
        );
    }

    #[test]
    fn endpoints_as_json_lines() {
        let mut out = Vec::new();
        write_endpoints(&rows(), Format::Json, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let back: Vec<EndpointRow> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(back, rows());
        assert!(
            text.starts_with(r#"{"endpoint":"users.show","rule":"/users/<int:id>","methods":["GET","HEAD","OPTIONS"],"hits":1234,"#),
            "{text}"
        );
        assert!(
            text.ends_with("\"error_rate\":null,\"last_requested\":null,\"monitor_level\":1}\n"),
            "{text}"
        );
    }

    #[test]
    fn the_mode_is_said_in_words() {
        let say = |mode: &str, rules, unmatched| {
            describe_endpoints(&EndpointList {
                mode: mode.into(),
                rules,
                unmatched,
                endpoints: vec![],
            })
        };
        assert_eq!(
            say(modes::FLASK_ROUTES, 12, 0),
            "endpoints from the Flask route table (12 rules)"
        );
        assert_eq!(
            say(modes::FLASK_ROUTES, 1, 1),
            "endpoints from the Flask route table (1 rule); 1 request matched no endpoint (404, 405)"
        );
        assert_eq!(
            say(modes::PATH_TEMPLATES, 0, 7),
            "no route table could be read: endpoints are path templates; 7 requests matched no endpoint \
             (404, 405)"
        );
        assert_eq!(
            say(modes::PENDING, 0, 0),
            "no route table read yet: endpoints are those recorded so far"
        );
        assert_eq!(say("sampled", 3, 0), "endpoints in mode sampled");
    }
}
