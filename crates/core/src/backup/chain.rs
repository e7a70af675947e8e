//! Restore of a delta chain: which backup supplies which file, decided before anything is
//! written.
//!
//! The newest backup's `Files` is the restored cluster's file list. Going from the newest to
//! the full at the root (as WAL-G does), a file the newer backup has whole needs nothing older;
//! a file it has as an increment or skipped (unchanged) needs the older backup's version, and so
//! on. So each older backup is asked only for the files still needed, and only its tar parts
//! that hold one are read: a chain restores at about the cost of one full restore plus the
//! deltas. The restore then runs oldest first: whole files, then each increment on top (a page
//! changed in several deltas is written once per delta).
//!
//! Invariants: every link is checked (the parent exists: NotFound only when storage answered
//! so; its start LSN is the child's DeltaLSN; same system; the chain ends at the DeltaFullName
//! full); a file a newer backup needs that the older one does not record is an error naming both;
//! a full backup recording increments or skipped files is corrupt; a delta without files
//! metadata cannot be restored (the increments cannot be told from whole files) and is refused.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::format::names::{files_metadata_key, lsn_to_string, sentinel_key};
use crate::format::sentinel::{FileDescription, Sentinel};
use crate::format::tar::EntryAction;

/// Longest chain followed (a guard against hand-made loops; WAL-G has no limit of its own).
pub const MAX_CHAIN: usize = 10_000;

/// What one backup of the chain must supply.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    /// The newest backup: everything it holds (increments per its `Files`).
    pub newest: bool,
    /// Older backups: entry name -> Whole or Increment.
    pub files: BTreeMap<String, EntryAction>,
    /// The newest backup's increments (entry names).
    pub newest_increments: BTreeSet<String>,
    /// Partial restore: files of the databases not asked for become empty placeholders (set on
    /// the newest backup only; older ones are not asked for those files at all).
    pub restore_only: Option<crate::backup::partial::RestoreOnly>,
}

impl Needs {
    /// What to do with an entry of this backup's tars.
    pub fn decide(&self, name: &str, is_dir: bool) -> EntryAction {
        if self.newest {
            if !is_dir && self.restore_only.as_ref().is_some_and(|r| r.is_placeholder(name)) {
                EntryAction::Placeholder
            } else if !is_dir && self.newest_increments.contains(name) {
                EntryAction::Increment
            } else {
                EntryAction::Whole
            }
        } else if is_dir {
            EntryAction::Skip // directories come from the newest backup; parents are made as needed
        } else {
            self.files.get(name).copied().unwrap_or(EntryAction::Skip)
        }
    }

    /// Whether a part holding `entries` must be read.
    pub fn wants_any(&self, entries: &[String]) -> bool {
        self.newest || entries.iter().any(|e| self.files.contains_key(e))
    }
}

/// Check the link from `child` (a delta) to `parent`, whose sentinel was read.
pub fn check_link(child_name: &str, child: &Sentinel, parent_name: &str, parent: &Sentinel) -> Result<()> {
    let key = sentinel_key(child_name);
    if child.delta_lsn != Some(parent.lsn) {
        return Err(Error::corrupt(
            key,
            format!(
                "DeltaLSN {} but its base {parent_name} starts at {}: the base in storage is not the one this delta was taken from",
                child.delta_lsn.map(lsn_to_string).unwrap_or_default(),
                lsn_to_string(parent.lsn)
            ),
        ));
    }
    if let (Some(a), Some(b)) = (child.system_identifier, parent.system_identifier) {
        if a != b {
            return Err(Error::corrupt(key, format!("system identifier {a}, but its base {parent_name} has {b}")));
        }
    }
    Ok(())
}

/// The whole chain must end at the full backup every delta names as DeltaFullName.
pub fn check_root(chain: &[(&str, &Sentinel)]) -> Result<()> {
    let Some((root, root_s)) = chain.last() else { return Ok(()) };
    if root_s.is_delta() {
        return Err(Error::Internal(format!("chain ends at the delta {root}")));
    }
    for (name, s) in chain.iter().filter(|(_, s)| s.is_delta()) {
        if s.delta_full_name.as_deref() != Some(*root) {
            return Err(Error::corrupt(
                sentinel_key(name),
                format!(
                    "DeltaFullName {:?}, but following DeltaFrom leads to the full backup {root}",
                    s.delta_full_name.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    Ok(())
}

/// One backup of the chain, as `assign` sees it: its name, whether it is a delta, and its
/// recorded files (None without usable files metadata).
pub struct StepFiles<'a> {
    pub name: &'a str,
    pub is_delta: bool,
    pub files: Option<&'a BTreeMap<String, FileDescription>>,
}

/// Decide what each backup (newest first) supplies.
pub fn assign(steps: &[StepFiles]) -> Result<Vec<Needs>> {
    let Some(newest) = steps.first() else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(steps.len());
    let mut first = Needs { newest: true, ..Default::default() };
    // Files still wanted from older backups, and who asked (for the error message).
    let mut want: BTreeMap<String, &str> = BTreeMap::new();
    match newest.files {
        Some(files) => {
            for (name, d) in files {
                if d.is_incremented && d.is_skipped {
                    return Err(Error::corrupt(files_metadata_key(newest.name), format!("{name:?} is both incremented and skipped")));
                }
                if d.is_incremented {
                    first.newest_increments.insert(name.clone());
                }
                if d.is_incremented || d.is_skipped {
                    want.insert(name.clone(), newest.name);
                }
            }
        }
        None if newest.is_delta => return Err(no_files_metadata(newest.name)),
        None => {}
    }
    if !newest.is_delta {
        if let Some(name) = want.keys().next() {
            return Err(Error::corrupt(files_metadata_key(newest.name), format!("a full backup, but records {name:?} as incremented or skipped")));
        }
    }
    out.push(first);
    for (i, step) in steps.iter().enumerate().skip(1) {
        let mut needs = Needs::default();
        let Some(files) = step.files else {
            if step.is_delta {
                return Err(no_files_metadata(step.name));
            }
            // A full without files metadata: every wanted file whole, from whichever part has it.
            needs.files = want.keys().map(|n| (n.clone(), EntryAction::Whole)).collect();
            want.clear();
            out.push(needs);
            continue;
        };
        let mut next = BTreeMap::new();
        for (name, asker) in want {
            let d = files.get(&name).ok_or_else(|| {
                Error::corrupt(
                    files_metadata_key(step.name),
                    format!("records no file {name:?}, which the newer backup {asker} takes from it (unchanged or as an increment)"),
                )
            })?;
            if !step.is_delta && (d.is_incremented || d.is_skipped) {
                return Err(Error::corrupt(
                    files_metadata_key(step.name),
                    format!("a full backup, but records {name:?} as {}", if d.is_skipped { "skipped" } else { "incremented" }),
                ));
            }
            if d.is_skipped {
                next.insert(name, step.name);
            } else if d.is_incremented {
                needs.files.insert(name.clone(), EntryAction::Increment);
                next.insert(name, step.name);
            } else {
                needs.files.insert(name, EntryAction::Whole);
            }
        }
        want = next;
        out.push(needs);
        if i == steps.len() - 1 && !want.is_empty() {
            return Err(Error::Internal(format!("files still wanted after the full backup {}", step.name)));
        }
    }
    Ok(out)
}

fn no_files_metadata(name: &str) -> Error {
    Error::corrupt(
        files_metadata_key(name),
        "a delta backup without usable files metadata cannot be restored: which entries are increments is recorded only there",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn d(inc: bool, skip: bool) -> FileDescription {
        FileDescription { is_incremented: inc, is_skipped: skip, mtime: Utc::now(), updates_count: 0, corrupt_blocks: None, size: None }
    }

    #[test]
    fn each_backup_supplies_only_what_the_newer_ones_still_need() {
        let full: BTreeMap<_, _> = [("/a", d(false, false)), ("/b", d(false, false)), ("/c", d(false, false)), ("/gone", d(false, false))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let d1: BTreeMap<_, _> = [("/a", d(true, false)), ("/b", d(false, true)), ("/c", d(false, false))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let d2: BTreeMap<_, _> = [("/a", d(true, false)), ("/b", d(true, false)), ("/c", d(false, true)), ("/new", d(false, false))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let steps = [
            StepFiles { name: "d2", is_delta: true, files: Some(&d2) },
            StepFiles { name: "d1", is_delta: true, files: Some(&d1) },
            StepFiles { name: "full", is_delta: false, files: Some(&full) },
        ];
        let n = assign(&steps).unwrap();
        assert!(n[0].newest);
        assert_eq!(n[0].decide("/a", false), EntryAction::Increment);
        assert_eq!(n[0].decide("/new", false), EntryAction::Whole);
        assert_eq!(n[0].decide("/base", true), EntryAction::Whole);
        // /b: an increment in d2, skipped in d1, so whole from the full; /c: skipped in d2, whole in d1.
        assert_eq!(n[1].files, [("/a".to_string(), EntryAction::Increment), ("/c".into(), EntryAction::Whole)].into());
        assert_eq!(n[1].decide("/base", true), EntryAction::Skip);
        // The full is not asked for /c (whole in d1) nor /gone (not in the newest).
        assert_eq!(n[2].files, [("/a".to_string(), EntryAction::Whole), ("/b".into(), EntryAction::Whole)].into());
        assert!(!n[2].wants_any(&["/c".into(), "/gone".into()]));
        assert!(n[2].wants_any(&["/c".into(), "/a".into()]));

        // A file the newer backup takes from an older one that does not record it.
        let mut d1_missing = d1.clone();
        d1_missing.remove("/b");
        let err = assign(&[
            StepFiles { name: "d2", is_delta: true, files: Some(&d2) },
            StepFiles { name: "d1", is_delta: true, files: Some(&d1_missing) },
            StepFiles { name: "full", is_delta: false, files: Some(&full) },
        ])
        .unwrap_err();
        assert!(err.to_string().contains("/b") && err.to_string().contains("d1/files_metadata.json") && err.to_string().contains("d2"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        // A full that records an increment.
        let err = assign(&[StepFiles { name: "d1", is_delta: true, files: Some(&d1) }, StepFiles { name: "full", is_delta: false, files: Some(&d1) }])
            .unwrap_err();
        assert!(err.to_string().contains("a full backup"), "{err}");
        // A delta without files metadata.
        let err = assign(&[StepFiles { name: "d1", is_delta: true, files: None }]).unwrap_err();
        assert!(err.to_string().contains("without usable files metadata"), "{err}");
        // A full without files metadata under a delta: wanted files, whole, from any part.
        let n = assign(&[StepFiles { name: "d1", is_delta: true, files: Some(&d1) }, StepFiles { name: "full", is_delta: false, files: None }]).unwrap();
        assert_eq!(n[1].files.len(), 2);
    }

    #[test]
    fn links_are_checked() {
        let full = Sentinel { lsn: 0x100, system_identifier: Some(7), ..Default::default() };
        let mut delta = Sentinel {
            lsn: 0x200,
            delta_lsn: Some(0x100),
            delta_from: Some("full".into()),
            delta_full_name: Some("full".into()),
            delta_count: Some(1),
            system_identifier: Some(7),
            ..Default::default()
        };
        check_link("d", &delta, "full", &full).unwrap();
        check_root(&[("d", &delta), ("full", &full)]).unwrap();
        delta.delta_lsn = Some(0x180);
        let err = check_link("d", &delta, "full", &full).unwrap_err();
        assert!(err.to_string().contains("DeltaLSN 0/180") && err.to_string().contains("0/100"), "{err}");
        delta.delta_lsn = Some(0x100);
        delta.system_identifier = Some(8);
        assert!(check_link("d", &delta, "full", &full).unwrap_err().to_string().contains("system identifier"));
        delta.delta_full_name = Some("other".into());
        let err = check_root(&[("d", &delta), ("full", &full)]).unwrap_err();
        assert!(err.to_string().contains("DeltaFullName"), "{err}");
    }
}
