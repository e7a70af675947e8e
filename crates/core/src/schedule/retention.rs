//! `walg.retain`: the arguments of WAL-G's `delete retain` (`FULL 7`, `FIND_FULL 7`, `7`, with an
//! optional `--after NAME|TIME`), turned into the one delete implementation's request
//! (catalog/delete.rs). Applied after each successful scheduled backup, with confirm, followed
//! by `delete garbage` (WAL before the oldest kept backup, leftovers of failed backups).
//! Permanent backups and their WAL are kept by delete itself.
use chrono::{DateTime, Utc};

use crate::catalog::delete::{DeleteRequest, GarbageScope};
use crate::error::{Error, Result};

/// The retention request `walg.retain = text` stands for; None when empty (off).
pub fn parse_retain(text: &str, now: DateTime<Utc>) -> Result<Option<DeleteRequest>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (words, after) = match text.find("--after") {
        Some(i) => {
            let after = text[i + "--after".len()..].trim().trim_start_matches('=').trim();
            if after.is_empty() {
                return Err(Error::InvalidArgument(format!("walg.retain: {text:?}: --after needs a backup name or a time")));
            }
            (&text[..i], Some(after))
        }
        None => (text, None),
    };
    let mut args = vec!["retain".to_string()];
    args.extend(words.split_whitespace().map(String::from));
    DeleteRequest::parse_args(&args, after, now)
        .map(Some)
        .map_err(|e| Error::InvalidArgument(format!("walg.retain: {text:?}: {e}")))
}

/// What follows retention: WAL-G's `delete garbage`.
pub fn garbage() -> DeleteRequest {
    DeleteRequest::Garbage { scope: GarbageScope::All }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T17:30:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn walg_retain_takes_delete_retain_arguments() {
        assert_eq!(parse_retain("", now()).unwrap(), None);
        assert_eq!(parse_retain("  ", now()).unwrap(), None);
        let args = |s: &[&str], after: Option<&str>| {
            DeleteRequest::parse_args(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>(), after, now()).unwrap()
        };
        assert_eq!(parse_retain("FULL 7", now()).unwrap(), Some(args(&["retain", "FULL", "7"], None)));
        assert_eq!(parse_retain("find_full 7", now()).unwrap(), Some(args(&["retain", "FIND_FULL", "7"], None)));
        assert_eq!(parse_retain("7", now()).unwrap(), Some(args(&["retain", "7"], None)));
        assert_eq!(
            parse_retain("7 --after 2026-01-01T00:00:00Z", now()).unwrap(),
            Some(args(&["retain", "7"], Some("2026-01-01T00:00:00Z")))
        );
        assert_eq!(
            parse_retain("FULL 2 --after 2026-01-01 00:00:00", now()).unwrap(),
            Some(args(&["retain", "FULL", "2"], Some("2026-01-01 00:00:00"))),
            "a time with a space"
        );
    }

    #[test]
    fn bad_retain_values_name_the_setting() {
        for bad in ["FULL", "FULL seven", "0", "FULL -1", "SOME 7", "7 --after", "everything FORCE"] {
            let err = parse_retain(bad, now()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::BadInput, "{bad}");
            assert!(err.to_string().contains("walg.retain"), "{err}");
        }
    }
}
