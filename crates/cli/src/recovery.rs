//! `backup-fetch` with recovery set-up (point-in-time recovery, standby) and `--dry-run`.
//! Everything is checked (options, configuration secrets, backup choice, WAL in storage)
//! before the first byte is written; a plain `backup-fetch` without these options behaves as
//! it always did (restore only, no WAL listing).
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use walg_core::backup::recovery::{
    self, parse_action, parse_target_lsn, parse_target_name, parse_target_time, parse_target_xid, parse_timeline,
    RecoveryRequest, Target,
};
use walg_core::catalog::pitr::{self, RangeEnd, RecoveryPlan};
use walg_core::config::Settings;
use walg_core::{backup, Error, Result};

use crate::commands::load_config;

/// Where tablespaces go (walg_core::backup::tablespaces); default: where they were.
#[derive(Args, Debug, Default, Clone)]
pub struct TablespaceArgs {
    /// WAL-G's restore spec: JSON shaped like the sentinel's Spec ({"base_prefix": ...,
    /// "tablespaces": ["OID", ...], "OID": {"loc": DIR, "link": "pg_tblspc/OID"}}); each listed
    /// tablespace is restored into its "loc".
    #[arg(long, value_name = "FILE")]
    pub restore_spec: Option<PathBuf>,
    /// Restore a tablespace into DIR (absolute; must not exist or be empty) instead of its
    /// original location; by OID, or by name when the backup recorded names (walg_ext's do).
    /// Repeatable; applied after --restore-spec.
    #[arg(long = "tablespace", value_name = "OID_OR_NAME=DIR")]
    pub tablespace: Vec<String>,
}

impl TablespaceArgs {
    pub fn options(&self) -> Result<backup::tablespaces::TablespaceOptions> {
        Ok(backup::tablespaces::TablespaceOptions {
            under: None,
            restore_spec: self.restore_spec.as_deref().map(backup::tablespaces::read_restore_spec).transpose()?,
            relocate: self.tablespace.iter().map(|a| backup::tablespaces::parse_relocation(a)).collect::<Result<_>>()?,
        })
    }
}

#[derive(Args, Debug, Default, Clone)]
#[command(group(ArgGroup::new("recovery_target").multiple(false)
    .args(["target_time", "target_lsn", "target_xid", "target_name", "target_immediate"])))]
pub struct RecoveryArgs {
    /// Set up recovery to the end of the archive (recovery.signal and restore_command);
    /// implied by every --target-* option.
    #[arg(long)]
    pub recovery: bool,
    /// Recover to this time: RFC 3339 or PostgreSQL text with a zone ('2026-11-29 14:20:00+00').
    #[arg(long, value_name = "TIME")]
    pub target_time: Option<String>,
    /// Recover to this LSN (X/Y).
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover to the commit of this transaction id.
    #[arg(long, value_name = "XID")]
    pub target_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME")]
    pub target_name: Option<String>,
    /// Recover only until the backup is consistent.
    #[arg(long)]
    pub target_immediate: bool,
    /// Timeline to recover along: current (the backup's), latest (PostgreSQL's default) or N.
    #[arg(long, value_name = "current|latest|N")]
    pub target_timeline: Option<String>,
    /// What the server does at the target (PostgreSQL's default: pause).
    #[arg(long, value_name = "pause|promote|shutdown", requires = "recovery_target")]
    pub target_action: Option<String>,
    /// Stop just before the target (time, LSN, xid) instead of just after it.
    #[arg(long, requires = "recovery_target", conflicts_with_all = ["target_name", "target_immediate"])]
    pub target_exclusive: bool,
    /// Set up a standby that follows the archive (standby.signal); no target.
    #[arg(long, conflicts_with_all = ["recovery_target", "target_action", "target_exclusive", "recovery"])]
    pub standby: bool,
    /// Print the chosen backup, the WAL range needed and whether it is all in storage; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl RecoveryArgs {
    /// Whether recovery is to be set up at all.
    pub fn wants_recovery(&self) -> bool {
        self.recovery
            || self.standby
            || self.target_time.is_some()
            || self.target_lsn.is_some()
            || self.target_xid.is_some()
            || self.target_name.is_some()
            || self.target_immediate
            || self.target_timeline.is_some()
    }

    pub fn request(&self) -> Result<RecoveryRequest> {
        let target = if let Some(t) = &self.target_time {
            Some(Target::Time(parse_target_time(t)?))
        } else if let Some(l) = &self.target_lsn {
            Some(Target::Lsn(parse_target_lsn(l)?))
        } else if let Some(x) = &self.target_xid {
            Some(Target::Xid(parse_target_xid(x)?))
        } else if let Some(n) = &self.target_name {
            Some(Target::Name(parse_target_name(n)?))
        } else if self.target_immediate {
            Some(Target::Immediate)
        } else {
            None
        };
        let req = RecoveryRequest {
            standby: self.standby,
            target,
            exclusive: self.target_exclusive,
            timeline: self.target_timeline.as_deref().map(parse_timeline).transpose()?,
            action: self.target_action.as_deref().map(parse_action).transpose()?,
        };
        req.check()?;
        Ok(req)
    }
}

/// The restore_command for this run: this binary, the same `--config` (absolute) and the
/// WAL-G settings of the environment; refused when the environment holds a secret.
pub(crate) fn restore_command_for(config: Option<&Path>) -> Result<(String, Option<PathBuf>)> {
    let exe = std::env::current_exe().map_err(|e| Error::io("(the walg-ext binary)", e))?;
    let config = config
        .map(|c| std::fs::canonicalize(c).map_err(|e| Error::Config(format!("config file {}: {e}", c.display()))))
        .transpose()?;
    let env: Vec<(String, String)> = Settings::from_env().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Ok((recovery::restore_command(&exe, config.as_deref(), &env)?, config))
}

/// Human lines describing a plan (stdout for --dry-run, stderr otherwise).
pub fn describe(plan: &RecoveryPlan, req: &RecoveryRequest, recovery: bool) -> Vec<String> {
    let lsn = walg_core::format::names::lsn_to_string;
    let mut out = vec![format!(
        "backup:     {} (timeline {}, WAL {} to {}, finished {})",
        plan.backup,
        plan.backup_timeline,
        lsn(plan.start_lsn),
        lsn(plan.finish_lsn),
        recovery::pg_time(&plan.finish_time)
    )];
    let target = match (&req.target, recovery) {
        (_, false) => "none: restore only (no recovery set-up)".to_string(),
        (_, true) if req.standby => "standby: follow the archive".to_string(),
        (None, true) => "the end of the archive".to_string(),
        (Some(t), true) if t.has_inclusive() => {
            format!("{t} ({})", if req.exclusive { "exclusive" } else { "inclusive" })
        }
        (Some(t), true) => t.to_string(),
    };
    out.push(format!("target:     {target}"));
    if recovery {
        let how = req.timeline.map(|t| t.to_string()).unwrap_or_else(|| "latest, PostgreSQL's default".into());
        out.push(format!("timeline:   {} ({how})", plan.timeline));
    }
    let until = match plan.end {
        RangeEnd::BackupEnd => "to the end of the backup",
        RangeEnd::TargetLsn => "to the target LSN",
        RangeEnd::TargetTime => "to the first segment archived after the target time",
        RangeEnd::ArchiveEnd => "to the end of the archive",
    };
    out.push(format!("WAL needed: {} .. {} ({} segments, {until})", plan.first, plan.last, plan.segments));
    if plan.missing.is_empty() {
        out.push(format!("in storage: all {} segments", plan.segments));
    } else {
        out.push(format!(
            "in storage: MISSING {} of {}: {}",
            plan.missing.len(),
            plan.segments,
            pitr::list_some(&plan.missing)
        ));
    }
    out.extend(plan.notes.iter().map(|n| format!("note:       {n}")));
    out.extend(plan.problems.iter().map(|p| format!("refused:    {p}")));
    out
}

pub fn backup_fetch(config: Option<&Path>, target: &Path, name: &str, args: &RecoveryArgs, ts: &TablespaceArgs, seg: u64) -> Result<()> {
    let ts = ts.options()?;
    let recovery = args.wants_recovery();
    if !recovery && !args.dry_run {
        return crate::commands::backup_fetch(config, target, name, &ts);
    }
    let req = args.request()?;
    // The restore refuses a non-empty directory too; say so before listing storage.
    if std::fs::read_dir(target).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::io(
            target,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "restore target directory is not empty"),
        ));
    }
    let cfg = load_config(config)?;
    let (rc, abs_config) = if recovery { restore_command_for(config).map(|(r, c)| (Some(r), c))? } else { (None, None) };
    let storage = cfg.open_storage()?;
    let plan = pitr::plan(storage.as_ref(), &cfg.pipeline(), name, &req, recovery, seg)?;
    let lines = describe(&plan, &req, recovery);
    let settings = rc.as_ref().map(|rc| recovery::recovery_settings(&req, rc)).unwrap_or_default();
    if args.dry_run {
        for l in &lines {
            println!("{l}");
        }
        if recovery {
            println!("would write: {} and, in postgresql.auto.conf:", req.signal_file());
            for (k, v) in &settings {
                println!("  {k} = {}", recovery::conf_quote(v));
            }
        }
        println!("dry run: nothing written");
    } else {
        for l in &lines {
            eprintln!("walg-ext: {l}");
        }
    }
    if !plan.problems.is_empty() {
        return Err(Error::Refused(format!("nothing restored: {}", plan.problems.join("; "))));
    }
    if args.dry_run {
        return Ok(());
    }

    eprintln!("walg-ext: restoring {} from {} into {}", plan.backup, storage.describe(), target.display());
    let log = |line: &str| eprintln!("walg-ext: {line}");
    backup::fetch::fetch_with(&cfg, &storage, &plan.backup, target, &ts, &log)?;
    let header = format!(
        "recovery set up by walg-ext backup-fetch of {} at {}",
        plan.backup,
        crate::commands::rfc3339(std::time::SystemTime::now())
    );
    let block = recovery::render_settings(&header, &settings);
    recovery::write_recovery_files(target, &req, &block)?;
    eprintln!(
        "walg-ext: wrote {} and {} recovery setting(s) into postgresql.auto.conf; start the server: pg_ctl -D {} start",
        req.signal_file(),
        settings.len(),
        target.display()
    );
    if let (Some(c), Ok(dir)) = (abs_config, std::fs::metadata(target)) {
        if let Ok(m) = std::fs::metadata(&c) {
            if m.uid() != dir.uid() && m.mode() & 0o004 == 0 {
                eprintln!(
                    "walg-ext: WARNING: restore_command reads {} (owner uid {}), but the restored directory belongs to uid {}: \
                     make sure the server's user can read it",
                    c.display(),
                    m.uid(),
                    dir.uid()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        r: RecoveryArgs,
    }

    fn parse(args: &str) -> std::result::Result<RecoveryArgs, String> {
        let argv = std::iter::once("t").chain(args.split_whitespace());
        T::try_parse_from(argv).map(|t| t.r).map_err(|e| e.to_string())
    }

    #[test]
    fn option_combinations() {
        let r = parse("--target-lsn 0/3000000 --target-exclusive --target-action promote --target-timeline current").unwrap();
        let req = r.request().unwrap();
        assert!(r.wants_recovery() && req.exclusive && req.target == Some(Target::Lsn(0x300_0000)));
        assert!(!parse("").unwrap().wants_recovery());
        assert!(!parse("--dry-run").unwrap().wants_recovery());
        assert!(parse("--recovery").unwrap().wants_recovery());
        assert!(parse("--target-timeline latest").unwrap().wants_recovery());
        assert!(parse("--standby --target-timeline 2").unwrap().request().unwrap().standby);
        // At most one target; action and exclusive need one; standby takes none.
        for bad in [
            "--target-lsn 0/1 --target-xid 5",
            "--target-time 2026-01-01T00:00:00Z --target-immediate",
            "--target-action promote",
            "--target-exclusive",
            "--target-name rp --target-exclusive",
            "--target-immediate --target-exclusive",
            "--standby --target-lsn 0/1",
            "--standby --recovery",
        ] {
            assert!(parse(bad).is_err(), "{bad} must be refused by the parser");
        }
        // Values are checked before anything is done.
        for bad in ["--target-time yesterday", "--target-lsn 12", "--target-xid x", "--target-timeline next", "--target-lsn 0/1 --target-action stop"] {
            let e = parse(bad).unwrap().request().unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
        }
    }
}
