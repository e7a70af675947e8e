//! Recovery set-up after a restore (point-in-time recovery, standby): the request (target,
//! timeline, action), its parsing and combination rules, the `restore_command` that calls this
//! same binary with the same configuration, and the text written into `postgresql.auto.conf`.
//!
//! Invariants:
//! - A secret (a key, a secret access key, a token, a passphrase) never goes into
//!   `restore_command` or `postgresql.auto.conf`: an environment-only configuration that holds
//!   one is refused; a `--config` file is referenced by its absolute path, never copied.
//! - Values are quoted twice, for PostgreSQL's configuration file (`'...'`, `''`, `\\`) and, in
//!   `restore_command`, first for `sh -c` (single quotes) and PostgreSQL's `%` escapes (`%%`).
//! - Recovery settings already in the restored `postgresql.auto.conf` (a backup of a cluster
//!   that was itself restored with a target) are commented out, so only ours apply.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};

use crate::error::{Error, Result};
use crate::format::names::{lsn_to_string, parse_lsn};

/// Where recovery stops. None in a request = replay to the end of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `recovery_target_time`.
    Time(DateTime<Utc>),
    /// `recovery_target_lsn`.
    Lsn(u64),
    /// `recovery_target_xid` (a 64-bit xid from `pg_current_xact_id()` is fine: PostgreSQL
    /// keeps its low 32 bits).
    Xid(u64),
    /// `recovery_target_name` (a restore point from `pg_create_restore_point`).
    Name(String),
    /// `recovery_target = 'immediate'`: stop as soon as the backup is consistent.
    Immediate,
}

impl Target {
    /// Whether `recovery_target_inclusive` applies (PostgreSQL: time, LSN and xid only).
    pub fn has_inclusive(&self) -> bool {
        matches!(self, Target::Time(_) | Target::Lsn(_) | Target::Xid(_))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Time(t) => write!(f, "time {}", pg_time(t)),
            Target::Lsn(l) => write!(f, "LSN {}", lsn_to_string(*l)),
            Target::Xid(x) => write!(f, "xid {x}"),
            Target::Name(n) => write!(f, "restore point {n:?}"),
            Target::Immediate => write!(f, "immediate (the end of the backup)"),
        }
    }
}

/// `recovery_target_timeline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineChoice {
    Current,
    Latest,
    Id(u32),
}

impl fmt::Display for TimelineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineChoice::Current => f.write_str("current"),
            TimelineChoice::Latest => f.write_str("latest"),
            TimelineChoice::Id(n) => write!(f, "{n}"),
        }
    }
}

/// `recovery_target_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// What to set up after the restore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// standby.signal (follow the archive forever) instead of recovery.signal.
    pub standby: bool,
    pub target: Option<Target>,
    /// `recovery_target_inclusive = false`.
    pub exclusive: bool,
    pub timeline: Option<TimelineChoice>,
    pub action: Option<TargetAction>,
}

impl RecoveryRequest {
    /// The combination rules (the CLI enforces most of them in its parser as well).
    pub fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.standby && self.target.is_some() {
            return bad("--standby follows the archive without end: it takes no recovery target (--target-timeline only)");
        }
        if self.standby && (self.action.is_some() || self.exclusive) {
            return bad("--target-action and --target-exclusive need a recovery target, not --standby");
        }
        if self.action.is_some() && self.target.is_none() {
            return bad("--target-action needs a recovery target (--target-time, --target-lsn, --target-xid, --target-name or --target-immediate)");
        }
        if self.exclusive && !self.target.as_ref().is_some_and(Target::has_inclusive) {
            return bad("--target-exclusive applies to --target-time, --target-lsn and --target-xid only");
        }
        if let Some(TimelineChoice::Id(0)) = self.timeline {
            return bad("--target-timeline 0: timelines start at 1");
        }
        Ok(())
    }

    pub fn signal_file(&self) -> &'static str {
        if self.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        }
    }
}

/// A recovery target time: RFC 3339 (`2026-11-29T14:20:00Z`, `...+02:00`) or PostgreSQL's text
/// (`2026-11-29 14:20:00.123456+00`, `... +0200`, `... UTC`). A zone is required: without one
/// the server would read the time in its own TimeZone setting.
pub fn parse_target_time(text: &str) -> Result<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "--target-time {text:?}: {why} (expected e.g. 2026-11-29T14:20:00Z or '2026-11-29 14:20:00.5+02')"
        ))
    };
    let (body, offset) = split_zone(t).ok_or_else(|| bad("a time zone is required (Z, UTC or +HH[:MM])"))?;
    let body = body.trim_end();
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(body, f).ok())
        .ok_or_else(|| bad("not a date and time"))?;
    let tz = FixedOffset::east_opt(offset).ok_or_else(|| bad("bad zone offset"))?;
    let local = tz.from_local_datetime(&naive).single().ok_or_else(|| bad("bad time"))?;
    Ok(local.with_timezone(&Utc))
}

/// Split a trailing zone off: (rest, offset in seconds east of UTC).
fn split_zone(t: &str) -> Option<(&str, i32)> {
    for z in ["UTC", "GMT", "Z", "utc", "gmt", "z"] {
        if let Some(rest) = t.strip_suffix(z) {
            if rest.len() >= 10 {
                return Some((rest, 0));
            }
        }
    }
    // The zone sign comes after the time of day (the date has '-' too).
    let time_start = t.find([' ', 'T'])?;
    let at = t[time_start..].rfind(['+', '-'])? + time_start;
    let (rest, zone) = t.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = if digits.len() == 4 { digits[2..].parse().ok()? } else { 0 };
    if h > 15 || m > 59 {
        return None;
    }
    Some((rest, sign * (h * 3600 + m * 60)))
}

/// PostgreSQL timestamptz text in UTC: `2026-11-29 14:20:00+00`, microseconds when not zero.
pub fn pg_time(t: &DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%d %H:%M:%S+00").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
    }
}

pub fn parse_target_lsn(text: &str) -> Result<u64> {
    parse_lsn(text).map_err(|_| Error::InvalidArgument(format!("--target-lsn {text:?}: expected X/Y in hex, e.g. 0/3000060")))
}

pub fn parse_target_xid(text: &str) -> Result<u64> {
    let x: u64 = text
        .trim()
        .parse()
        .map_err(|_| Error::InvalidArgument(format!("--target-xid {text:?}: expected a transaction id (a decimal number)")))?;
    if x & 0xFFFF_FFFF < 3 {
        return Err(Error::InvalidArgument(format!("--target-xid {text}: not a normal transaction id (0, 1 and 2 are reserved)")));
    }
    Ok(x)
}

/// PostgreSQL limits restore point names to 63 bytes.
pub fn parse_target_name(text: &str) -> Result<String> {
    if text.is_empty() || text.len() > 63 || text.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "--target-name {text:?}: a restore point name has 1 to 63 bytes and no control characters"
        )));
    }
    Ok(text.to_string())
}

pub fn parse_timeline(text: &str) -> Result<TimelineChoice> {
    match text.trim().to_ascii_lowercase().as_str() {
        "current" => Ok(TimelineChoice::Current),
        "latest" => Ok(TimelineChoice::Latest),
        n => match n.parse::<u32>() {
            Ok(id) if id >= 1 => Ok(TimelineChoice::Id(id)),
            _ => Err(Error::InvalidArgument(format!("--target-timeline {text:?}: expected current, latest or a timeline number"))),
        },
    }
}

pub fn parse_action(text: &str) -> Result<TargetAction> {
    match text.trim().to_ascii_lowercase().as_str() {
        "pause" => Ok(TargetAction::Pause),
        "promote" => Ok(TargetAction::Promote),
        "shutdown" => Ok(TargetAction::Shutdown),
        _ => Err(Error::InvalidArgument(format!("--target-action {text:?}: expected pause, promote or shutdown"))),
    }
}

/// A setting name that holds a secret (never written into a command line or a config file):
/// keys, secret access keys, tokens, passwords, passphrases. Names of files that hold them
/// (`*_PATH`, `*_FILE`), key transforms and key ids are not secrets.
pub fn is_secret_setting(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    if ["_PATH", "_FILE", "_TRANSFORM", "_ID"].iter().any(|s| k.ends_with(s)) {
        return false;
    }
    ["SECRET", "PASSWORD", "PASSPHRASE", "TOKEN", "KEY", "CREDENTIAL"].iter().any(|w| k.contains(w))
}

/// One word for `sh -c`: bare when it holds only safe characters, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A string value in PostgreSQL's configuration file syntax.
pub fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn no_newlines(what: &str, s: &str) -> Result<()> {
    if s.contains(['\n', '\r', '\0']) {
        return Err(Error::InvalidArgument(format!("{what} {s:?} contains a line break: it cannot go into restore_command")));
    }
    Ok(())
}

/// `restore_command` calling `exe ... wal-fetch %f %p` with the same configuration: `--config`
/// `config` (absolute) and the storage settings that came from the environment
/// (`env`, `config::is_storage_env_setting`), as `KEY=value` assignments in front of the command. Refused when `env` holds a
/// secret. `%` in the parts is escaped for PostgreSQL.
pub fn restore_command(exe: &Path, config: Option<&Path>, env: &[(String, String)]) -> Result<String> {
    let text = |p: &Path, what: &str| -> Result<String> {
        let s = p.to_str().ok_or_else(|| Error::InvalidArgument(format!("{what} {} is not UTF-8", p.display())))?;
        if !p.is_absolute() {
            return Err(Error::InvalidArgument(format!("{what} {s} is not an absolute path")));
        }
        no_newlines(what, s)?;
        Ok(s.to_string())
    };
    let mut env: Vec<&(String, String)> =
        env.iter().filter(|(k, _)| crate::config::is_storage_env_setting(k)).collect();
    env.sort();
    let secrets: Vec<&str> = env.iter().filter(|(k, _)| is_secret_setting(k)).map(|(k, _)| k.as_str()).collect();
    if !secrets.is_empty() {
        return Err(Error::Config(format!(
            "the environment holds {} ({}): a secret cannot go into restore_command or postgresql.auto.conf. \
             Put the settings in a file (mode 0600, readable by the server's user) and run \
             walg-ext --config FILE backup-fetch ... (with the secrets out of the environment)",
            if secrets.len() == 1 { "a secret setting" } else { "secret settings" },
            secrets.join(", ")
        )));
    }
    let mut words = Vec::new();
    for (k, v) in env {
        if !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue; // not a shell variable name; cannot be assigned (and not a WAL-G setting)
        }
        no_newlines(k, v)?;
        words.push(format!("{k}={}", shell_quote(v)));
    }
    words.push(shell_quote(&text(exe, "the walg-ext binary")?));
    if let Some(c) = config {
        words.push("--config".into());
        words.push(shell_quote(&text(c, "config file")?));
    }
    words.push("wal-fetch".into());
    Ok(format!("{} %f %p", words.join(" ").replace('%', "%%")))
}

/// Every setting we manage; earlier lines for them are commented out.
pub const MANAGED_SETTINGS: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];

/// (name, raw value) of every setting a request needs, in a fixed order.
pub fn recovery_settings(req: &RecoveryRequest, restore_command: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![("restore_command", restore_command.to_string())];
    match &req.target {
        None => {}
        Some(Target::Time(t)) => out.push(("recovery_target_time", pg_time(t))),
        Some(Target::Lsn(l)) => out.push(("recovery_target_lsn", lsn_to_string(*l))),
        Some(Target::Xid(x)) => out.push(("recovery_target_xid", x.to_string())),
        Some(Target::Name(n)) => out.push(("recovery_target_name", n.clone())),
        Some(Target::Immediate) => out.push(("recovery_target", "immediate".into())),
    }
    if req.exclusive {
        out.push(("recovery_target_inclusive", "false".into()));
    }
    if let Some(t) = req.timeline {
        out.push(("recovery_target_timeline", t.to_string()));
    }
    if let Some(a) = req.action {
        out.push(("recovery_target_action", a.as_str().into()));
    }
    out
}

/// The block appended to postgresql.auto.conf: a comment line, then `name = 'value'` lines.
pub fn render_settings(header: &str, settings: &[(&str, String)]) -> String {
    let mut s = format!("# {}\n", header.replace('\n', " "));
    for (k, v) in settings {
        s.push_str(&format!("{k} = {}\n", conf_quote(v)));
    }
    s
}

/// `existing` with every line that sets a managed setting commented out.
pub fn comment_out_managed(existing: &str) -> String {
    let mut out = String::with_capacity(existing.len() + 64);
    for line in existing.split_inclusive('\n') {
        let t = line.trim_start();
        let key: String = t
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect::<String>()
            .to_ascii_lowercase();
        let after = t[key.len()..].trim_start();
        if !key.is_empty() && MANAGED_SETTINGS.contains(&key.as_str()) && (after.starts_with('=') || !after.is_empty()) {
            out.push_str("# replaced by walg-ext backup-fetch: ");
        }
        out.push_str(line);
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Write the signal file and the settings into restored data directory `dir`: the other
/// signal file is removed, earlier managed settings are commented out, and the new
/// postgresql.auto.conf replaces the old one atomically. New files get the owner of `dir` (when
/// we run as root) and mode 0600. Returns the paths written.
pub fn write_recovery_files(dir: &Path, req: &RecoveryRequest, block: &str) -> Result<Vec<PathBuf>> {
    let dmeta = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    let give = |p: &Path| -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(p, Some(dmeta.uid()), Some(dmeta.gid())).map_err(|e| Error::io(p, e))?;
        }
        Ok(())
    };
    let signal = dir.join(req.signal_file());
    let other = dir.join(if req.standby { "recovery.signal" } else { "standby.signal" });
    match fs::remove_file(&other) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&other, e)),
    }
    let f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&signal).map_err(|e| Error::io(&signal, e))?;
    f.sync_all().map_err(|e| Error::io(&signal, e))?;
    give(&signal)?;

    let auto = dir.join("postgresql.auto.conf");
    let (old, mode) = match fs::read_to_string(&auto) {
        Ok(t) => (t, fs::metadata(&auto).map_err(|e| Error::io(&auto, e))?.permissions().mode() & 0o777),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o600),
        Err(e) => return Err(Error::io(&auto, e)),
    };
    let text = format!("{}{block}", comment_out_managed(&old));
    let tmp = dir.join("postgresql.auto.conf.walg-tmp");
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(|e| Error::io(&tmp, e))?;
    give(&tmp)?;
    fs::rename(&tmp, &auto).map_err(|e| Error::io(&auto, e))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    Ok(vec![signal, auto])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_times_in_rfc3339_and_postgresql_text() {
        let t = utc("2026-11-29T14:20:00Z");
        for s in [
            "2026-11-29T14:20:00Z",
            "2026-11-29T16:20:00+02:00",
            "2026-11-29 14:20:00+00",
            "2026-11-29 14:20:00 UTC",
            "2026-11-29 14:20:00Z",
            "2026-11-29 16:20:00+02",
            "2026-11-29 16:20:00 +0200",
            "2026-11-29 09:20:00-05",
            "2026-11-29 14:20+00",
            " 2026-11-29 14:20:00+00:00 ",
        ] {
            assert_eq!(parse_target_time(s).unwrap(), t, "{s}");
        }
        let f = parse_target_time("2026-11-29 14:20:00.123456+00").unwrap();
        assert_eq!(f.timestamp_subsec_micros(), 123456);
        assert_eq!(pg_time(&f), "2026-11-29 14:20:00.123456+00");
        assert_eq!(pg_time(&t), "2026-11-29 14:20:00+00");
        assert_eq!(parse_target_time("2026-11-29 16:20:00.5+02:30").unwrap(), utc("2026-11-29T13:50:00.5Z"));
        for bad in ["2026-11-29 14:20:00", "2026-11-29", "yesterday", "2026-13-01 00:00:00+00", "2026-11-29 14:20:00+99", ""] {
            let e = parse_target_time(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
        }
        assert!(parse_target_time("2026-11-29 14:20:00").unwrap_err().to_string().contains("time zone"));
    }

    #[test]
    fn parses_lsn_xid_name_timeline_action() {
        assert_eq!(parse_target_lsn("0/3000060").unwrap(), 0x300_0060);
        assert_eq!(parse_target_lsn("1A/0").unwrap(), 0x1A_0000_0000);
        assert!(parse_target_lsn("3000060").unwrap_err().to_string().contains("--target-lsn"));
        assert_eq!(parse_target_xid("1234").unwrap(), 1234);
        assert_eq!(parse_target_xid("4294968530").unwrap(), 4294968530); // epoch 1, xid 1234
        for bad in ["0", "2", "-5", "abc", "4294967296"] {
            assert!(parse_target_xid(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_target_name("before upgrade").unwrap(), "before upgrade");
        assert!(parse_target_name("").is_err());
        assert!(parse_target_name(&"x".repeat(64)).is_err());
        assert!(parse_target_name(&"x".repeat(63)).is_ok());
        assert!(parse_target_name("a\nb").is_err());
        assert_eq!(parse_timeline("latest").unwrap(), TimelineChoice::Latest);
        assert_eq!(parse_timeline("CURRENT").unwrap(), TimelineChoice::Current);
        assert_eq!(parse_timeline("3").unwrap(), TimelineChoice::Id(3));
        assert!(parse_timeline("0").is_err() && parse_timeline("next").is_err());
        assert_eq!(parse_action("promote").unwrap(), TargetAction::Promote);
        assert!(parse_action("resume").is_err());
    }

    #[test]
    fn combination_rules() {
        let ok = |r: RecoveryRequest| r.check().is_ok();
        let t = Some(Target::Lsn(5));
        assert!(ok(RecoveryRequest::default()));
        assert!(ok(RecoveryRequest { target: t.clone(), exclusive: true, action: Some(TargetAction::Promote), ..Default::default() }));
        assert!(ok(RecoveryRequest { standby: true, timeline: Some(TimelineChoice::Latest), ..Default::default() }));
        assert!(!ok(RecoveryRequest { standby: true, target: t.clone(), ..Default::default() }));
        assert!(!ok(RecoveryRequest { standby: true, action: Some(TargetAction::Pause), ..Default::default() }));
        assert!(!ok(RecoveryRequest { action: Some(TargetAction::Pause), ..Default::default() }));
        assert!(!ok(RecoveryRequest { exclusive: true, ..Default::default() }));
        assert!(!ok(RecoveryRequest { target: Some(Target::Name("x".into())), exclusive: true, ..Default::default() }));
        assert!(!ok(RecoveryRequest { target: Some(Target::Immediate), exclusive: true, ..Default::default() }));
        assert!(ok(RecoveryRequest { target: Some(Target::Xid(9)), exclusive: true, ..Default::default() }));
        let e = RecoveryRequest { action: Some(TargetAction::Pause), ..Default::default() }.check().unwrap_err();
        assert!(e.to_string().contains("--target-action needs a recovery target"), "{e}");
    }

    #[test]
    fn secrets_are_recognised() {
        for k in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "WALG_LIBSODIUM_KEY", "WALG_PGP_KEY", "WALG_PGP_KEY_PASSPHRASE", "WALG_S3_SSE_C_KEY"] {
            assert!(is_secret_setting(k), "{k}");
        }
        for k in ["AWS_ACCESS_KEY_ID", "WALG_LIBSODIUM_KEY_PATH", "WALG_LIBSODIUM_KEY_TRANSFORM", "WALG_FILE_PREFIX", "AWS_REGION", "AWS_WEB_IDENTITY_TOKEN_FILE", "WALG_S3_CA_CERT_FILE"] {
            assert!(!is_secret_setting(k), "{k}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn restore_command_quoting_golden() {
        let exe = Path::new("/usr/local/bin/walg-ext");
        assert_eq!(
            restore_command(exe, Some(Path::new("/etc/wal-g/wal-g.yaml")), &[]).unwrap(),
            "/usr/local/bin/walg-ext --config /etc/wal-g/wal-g.yaml wal-fetch %f %p"
        );
        // Spaces, a single quote and a percent sign in the paths.
        assert_eq!(
            restore_command(Path::new("/opt/my tools/walg-ext"), Some(Path::new("/etc/it's 100%/w.yaml")), &[]).unwrap(),
            r#"'/opt/my tools/walg-ext' --config '/etc/it'\''s 100%%/w.yaml' wal-fetch %f %p"#
        );
        // Environment settings become sorted assignments; other variables are left out.
        let e = env(&[("WALG_FILE_PREFIX", "/var/lib/walg backups"), ("PGDATA", "/x"), ("WALG_COMPRESSION_METHOD", "zstd"), ("AWS_REGION", "eu-west-1")]);
        assert_eq!(
            restore_command(exe, None, &e).unwrap(),
            "AWS_REGION=eu-west-1 WALG_COMPRESSION_METHOD=zstd WALG_FILE_PREFIX='/var/lib/walg backups' /usr/local/bin/walg-ext wal-fetch %f %p"
        );
        // Secrets from the environment are refused, naming the setting but never its value.
        let e = env(&[("WALG_S3_PREFIX", "s3://b/p"), ("AWS_ACCESS_KEY_ID", "AKIAX"), ("AWS_SECRET_ACCESS_KEY", "sup3rs3cret")]);
        let err = restore_command(exe, Some(Path::new("/etc/w.yaml")), &e).unwrap_err().to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY") && err.contains("--config") && !err.contains("sup3rs3cret"), "{err}");
        let err = restore_command(exe, None, &env(&[("WALG_LIBSODIUM_KEY", "k")])).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(restore_command(Path::new("walg-ext"), None, &[]).is_err(), "relative binary");
        assert!(restore_command(exe, Some(Path::new("w.yaml")), &[]).is_err(), "relative config");
        assert!(restore_command(exe, None, &env(&[("WALG_FILE_PREFIX", "/a\nb")])).is_err());
        // WAL-G's Azure keys go along (by name: other AZURE_* variables do not); its secrets not.
        let e = env(&[("WALG_AZ_PREFIX", "azure://c/p"), ("AZURE_STORAGE_ACCOUNT", "acct"), ("AZURE_CLIENT_ID", "x")]);
        assert_eq!(
            restore_command(exe, None, &e).unwrap(),
            "AZURE_STORAGE_ACCOUNT=acct WALG_AZ_PREFIX=azure://c/p /usr/local/bin/walg-ext wal-fetch %f %p"
        );
        for secret in ["AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_TOKEN"] {
            let e = env(&[("WALG_AZ_PREFIX", "azure://c/p"), (secret, "s3cr3t")]);
            let err = restore_command(exe, None, &e).unwrap_err().to_string();
            assert!(err.contains(secret) && !err.contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn auto_conf_text_golden() {
        let rc = restore_command(Path::new("/opt/it's/walg-ext"), Some(Path::new(r"/etc/a\b.yaml")), &[]).unwrap();
        let req = RecoveryRequest {
            target: Some(Target::Time(utc("2026-11-29T14:20:00.25Z"))),
            exclusive: true,
            timeline: Some(TimelineChoice::Current),
            action: Some(TargetAction::Promote),
            ..Default::default()
        };
        let text = render_settings("walg-ext backup-fetch base_X", &recovery_settings(&req, &rc));
        assert_eq!(
            text,
            concat!(
                "# walg-ext backup-fetch base_X\n",
                r#"restore_command = '''/opt/it''\\''''s/walg-ext'' --config ''/etc/a\\b.yaml'' wal-fetch %f %p'"#,
                "\n",
                "recovery_target_time = '2026-11-29 14:20:00.250000+00'\n",
                "recovery_target_inclusive = 'false'\n",
                "recovery_target_timeline = 'current'\n",
                "recovery_target_action = 'promote'\n",
            )
        );
        let s = |t: Target| recovery_settings(&RecoveryRequest { target: Some(t), ..Default::default() }, "rc")[1].clone();
        assert_eq!(s(Target::Lsn(0x1_0300_0060)), ("recovery_target_lsn", "1/3000060".into()));
        assert_eq!(s(Target::Xid(4321)), ("recovery_target_xid", "4321".into()));
        assert_eq!(s(Target::Name("it's".into())), ("recovery_target_name", "it's".into()));
        assert_eq!(s(Target::Immediate), ("recovery_target", "immediate".into()));
        assert_eq!(
            render_settings("h", &[("recovery_target_name", "it's".into())]),
            "# h\nrecovery_target_name = 'it''s'\n"
        );
        assert_eq!(recovery_settings(&RecoveryRequest::default(), "rc").len(), 1);
    }

    #[test]
    fn old_recovery_settings_are_commented_out() {
        let old = "# Do not edit this file manually!\nwork_mem = '8MB'\nrestore_command = 'cp x %p'\n  Recovery_Target_Time='2020-01-01 00:00:00+00'\nrecovery_target_timeline_x = 1\nrecovery_target_lsn";
        assert_eq!(
            comment_out_managed(old),
            "# Do not edit this file manually!\nwork_mem = '8MB'\n\
             # replaced by walg-ext backup-fetch: restore_command = 'cp x %p'\n\
             # replaced by walg-ext backup-fetch:   Recovery_Target_Time='2020-01-01 00:00:00+00'\n\
             recovery_target_timeline_x = 1\nrecovery_target_lsn\n"
        );
    }

    #[test]
    fn writes_signal_and_auto_conf() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("postgresql.auto.conf"), "work_mem = '8MB'\nrecovery_target_xid = '77'\n").unwrap();
        fs::set_permissions(d.join("postgresql.auto.conf"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(d.join("standby.signal"), "").unwrap();
        let req = RecoveryRequest { target: Some(Target::Immediate), ..Default::default() };
        let block = render_settings("h", &recovery_settings(&req, "rc %f %p"));
        let written = write_recovery_files(d, &req, &block).unwrap();
        assert_eq!(written, vec![d.join("recovery.signal"), d.join("postgresql.auto.conf")]);
        assert!(d.join("recovery.signal").is_file() && !d.join("standby.signal").exists());
        assert_eq!(
            fs::read_to_string(d.join("postgresql.auto.conf")).unwrap(),
            "work_mem = '8MB'\n# replaced by walg-ext backup-fetch: recovery_target_xid = '77'\n# h\nrestore_command = 'rc %f %p'\nrecovery_target = 'immediate'\n"
        );
        assert_eq!(fs::metadata(d.join("postgresql.auto.conf")).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(!d.join("postgresql.auto.conf.walg-tmp").exists());
        // A standby in a directory without postgresql.auto.conf.
        let dir2 = tempfile::tempdir().unwrap();
        let req = RecoveryRequest { standby: true, ..Default::default() };
        write_recovery_files(dir2.path(), &req, "# h\n").unwrap();
        assert!(dir2.path().join("standby.signal").is_file() && !dir2.path().join("recovery.signal").exists());
        assert_eq!(fs::read_to_string(dir2.path().join("postgresql.auto.conf")).unwrap(), "# h\n");
        assert_eq!(fs::metadata(dir2.path().join("postgresql.auto.conf")).unwrap().permissions().mode() & 0o777, 0o600);
        // An unwritable target is a local I/O error naming it.
        let err = write_recovery_files(&d.join("missing"), &req, "").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::LocalIo);
    }
}
