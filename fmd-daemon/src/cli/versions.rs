//! `fmd-daemon query versions`: every app version seen (config `app_version` or the git commit of the
//! app's code), when it was first and last seen and how many requests it served, oldest first.

use std::io::{self, Write};

use super::query::{fetch, json_line, write_table, Fetched, Format, Source};
use crate::store::{self, time::format_us, VersionRow};

impl Source {
    pub(super) fn versions(&self) -> anyhow::Result<Vec<VersionRow>> {
        match self {
            Self::File(store) => Ok(store::versions(store.connection())?),
            Self::Daemon { listen, db } => match fetch(*listen, db, "/api/versions", &[])? {
                Fetched::Got(rows) => Ok(rows),
                Fetched::Unreachable(e) => Self::fallback(db, &e)?.versions(),
            },
        }
    }
}

pub fn write_versions(rows: &[VersionRow], format: Format, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Json => rows.iter().try_for_each(|r| json_line(r, out)),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            if rows.is_empty() {
                csv.write_record(["version", "first_seen", "last_seen", "hits"])?;
            }
            rows.iter()
                .try_for_each(|r| csv.serialize(r))
                .map_err(io::Error::from)?;
            csv.flush()
        }
        Format::Table | Format::Folded => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.version.clone(),
                        format_us(r.first_seen),
                        format_us(r.last_seen),
                        r.hits.to_string(),
                    ]
                })
                .collect();
            write_table(
                &["version", "first_seen", "last_seen", "hits"],
                &[false, false, false, true],
                &cells,
                out,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(rows: &[VersionRow], format: Format) -> String {
        let mut out = Vec::new();
        write_versions(rows, format, &mut out).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn formats() {
        let rows = [VersionRow {
            version: "1.0".into(),
            first_seen: 1_795_449_401_123_456,
            last_seen: 1_795_449_402_123_456,
            hits: 12,
        }];
        assert_eq!(
            render(&rows, Format::Table),
            "\
version  first_seen                   last_seen                    hits
1.0      2026-11-23T15:56:41.123456Z  2026-11-23T15:56:42.123456Z    12
"
        );
        assert_eq!(
            render(&rows, Format::Csv),
            "version,first_seen,last_seen,hits\n1.0,2026-11-23T15:56:41.123456Z,2026-11-23T15:56:42.123456Z,12\n"
        );
        assert_eq!(
            render(&rows, Format::Json),
            "{\"version\":\"1.0\",\"first_seen\":\"2026-11-23T15:56:41.123456Z\",\"last_seen\":\"2026-11-23T15:56:42.123456Z\",\"hits\":12}\n"
        );
        assert_eq!(
            render(&[], Format::Csv),
            "version,first_seen,last_seen,hits\n"
        );
    }
}
