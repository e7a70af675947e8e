//! walg-ext: the restore side of walg_ext (works while the server is down) and operator commands.
//! Configuration: a `--config` file
//! (WAL-G's JSON/YAML keys) is read first and the environment overrides it, as in WAL-G.
mod commands;
mod drill;
mod exit;
mod manage;
mod recovery;
mod st;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "walg-ext", version, about = "Restore and inspect walg_ext / WAL-G backups", after_help = exit::HELP)]
struct Cli {
    /// WAL-G configuration file (JSON or YAML with WAL-G key names, e.g. WALG_FILE_PREFIX).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// WAL segment size of the cluster in bytes (PostgreSQL's default: 16 MiB).
    #[arg(long, global = true, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    wal_segment_size: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Restore a base backup into an empty directory (LATEST = newest backup), and optionally set
    /// up recovery: --recovery, --target-*, --standby (see the README); --dry-run writes nothing.
    BackupFetch {
        /// Target data directory; must not exist or be empty.
        target: PathBuf,
        /// Backup name (base_...) or LATEST (with a time or LSN target: the newest backup that
        /// finished before it).
        name: String,
        #[command(flatten)]
        recovery: recovery::RecoveryArgs,
        #[command(flatten)]
        tablespaces: recovery::TablespaceArgs,
    },
    /// Prove a backup restores: restore it into a scratch directory, start a throwaway
    /// PostgreSQL (private socket, no TCP, no archiving), recover to the end of the backup (or
    /// the --target-*), amcheck every B-tree index and table in every database, stop, remove
    /// it, and store the outcome as basebackups_005/<backup>/walg_drill.json. Non-zero exit when
    /// any step fails.
    RestoreDrill {
        #[command(flatten)]
        args: drill::DrillArgs,
    },
    /// List backups (with the last restore drill's outcome).
    BackupList {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Add start/finish times, LSNs, sizes, host and data directory.
        #[arg(long)]
        detail: bool,
    },
    /// Mark a backup permanent (and its delta ancestors), or not permanent with -i.
    BackupMark {
        name: String,
        /// Mark not permanent (refused while a permanent delta depends on it).
        #[arg(short = 'i', long)]
        impermanent: bool,
    },
    /// WAL segments in storage per timeline: parent, switch point, range, gaps, backups.
    WalShow {
        #[arg(long)]
        json: bool,
    },
    /// Check the WAL archive: integrity (segments from the earliest backup on) and/or timeline.
    /// Exit 1 when a check is not OK (errors: the codes in `walg-ext --help`).
    WalVerify {
        /// integrity, timeline, or both.
        #[arg(required = true)]
        checks: Vec<String>,
        #[arg(long)]
        json: bool,
        /// The cluster's current segment (pg_walfile_name(pg_current_wal_lsn())); default: the
        /// segment after the newest one in storage.
        #[arg(long, value_name = "WAL_FILE_NAME")]
        current_segment: Option<String>,
    },
    /// Delete backups and WAL, WAL-G's modes: retain [FULL|FIND_FULL] N, before [FIND_FULL]
    /// name|time, everything [FORCE], garbage [ARCHIVES|BACKUPS], target [FIND_FULL] name.
    /// Dry run unless --confirm.
    Delete {
        #[arg(required = true)]
        args: Vec<String>,
        /// retain only: also keep every backup from this name or time on.
        #[arg(long, value_name = "NAME|TIME")]
        after: Option<String>,
        /// Really delete (default: show what would be deleted).
        #[arg(long)]
        confirm: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy backups and the WAL they need to another storage (WAL-G's `copy`), object by object
    /// as stored (the destination needs the same keys), each read back and checked; a backup
    /// appears there only once whole. Resumable: what is already there is skipped.
    Copy {
        /// Config file of the source storage (WAL-G YAML or JSON, as --config).
        #[arg(short = 'f', long, value_name = "FILE")]
        from: PathBuf,
        /// Config file of the destination storage.
        #[arg(short = 't', long, value_name = "FILE")]
        to: PathBuf,
        /// Every backup and every WAL object.
        #[arg(long, conflicts_with_all = ["backups", "backup_name"])]
        all: bool,
        /// Backups to copy (names or LATEST), each with its delta ancestors and its WAL.
        backups: Vec<String>,
        /// WAL-G's way to name one backup.
        #[arg(short = 'b', long)]
        backup_name: Option<String>,
        /// Also the WAL after the named backups' end (WAL-G's --with-history).
        #[arg(short = 'w', long)]
        with_history: bool,
    },
    /// Storage tools (WAL-G's `st`): ls, get, put, cat, rm, check. They act on single objects
    /// without the checks of backup-fetch / wal-fetch: use with care.
    St {
        #[command(subcommand)]
        command: StCommand,
    },
    /// Fetch one WAL file (for restore_command = 'walg-ext wal-fetch %f %p').
    /// Exit 0: fetched; 1: not in storage (storage was reached and its wal_005/ exists, the file
    /// does not); 126: any other failure (storage unreachable, damaged object, bad settings,
    /// local I/O): PostgreSQL then stops recovery rather than ending it early.
    /// Segments are prefetched ahead (WALG_DOWNLOAD_CONCURRENCY of them, into
    /// pg_wal/.wal-g/prefetch or WALG_PREFETCH_DIR); a problem with a prefetch never changes
    /// the exit code.
    WalFetch {
        /// WAL file name, e.g. 000000010000000000000004 or 00000002.history.
        file: String,
        /// Where to write it (%p).
        dest: PathBuf,
    },
    /// Download the segments after FILE into LOCATION/.wal-g/prefetch (started by wal-fetch in
    /// the background; not meant to be run by hand).
    #[command(hide = true)]
    WalPrefetch {
        file: String,
        location: PathBuf,
    },
    /// Archive one WAL file (for archive_command = 'walg-ext wal-push %p').
    WalPush {
        /// Path of the WAL file (its base name is the WAL file name).
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum StCommand {
    /// List objects under a prefix (recursive), e.g. `st ls wal_005/`.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Download an object to DEST (a file that does not exist yet, or a directory), decrypted
    /// and decompressed (by its extension) unless told not to.
    Get {
        /// Object key, e.g. wal_005/000000010000000000000004.zst
        object: String,
        dest: PathBuf,
        /// Keep the object encrypted.
        #[arg(long)]
        no_decrypt: bool,
        /// Keep the object compressed.
        #[arg(long)]
        no_decompress: bool,
    },
    /// Upload a local file (or stdin with -s) as DEST + the compression's extension,
    /// compressed and encrypted as configured.
    Put {
        /// Local file, then the destination key; with -s only the destination key.
        #[arg(required = true, num_args = 1..=2, value_names = ["LOCAL_PATH", "DEST"])]
        args: Vec<String>,
        /// Do not encrypt.
        #[arg(long)]
        no_encrypt: bool,
        /// Do not compress (no extension is added).
        #[arg(long)]
        no_compress: bool,
        /// Overwrite an existing object.
        #[arg(short = 'f', long)]
        force: bool,
        /// Read the content from stdin.
        #[arg(short = 's', long)]
        read_stdin: bool,
    },
    /// Write an object to stdout: raw, unless --decrypt / --decompress.
    Cat {
        object: String,
        /// Decrypt with the configured key.
        #[arg(long)]
        decrypt: bool,
        /// Decompress (by the object's extension).
        #[arg(long)]
        decompress: bool,
    },
    /// Delete an object, or every object under a folder prefix (exit 3 if there is none).
    Rm { prefix: String },
    /// Check access to the storage.
    Check {
        #[command(subcommand)]
        check: StCheck,
    },
}

#[derive(Subcommand)]
enum StCheck {
    /// The storage can be read, and each OBJECT given exists (exit 3 naming those missing).
    Read { objects: Vec<String> },
    /// An object can be written and deleted.
    Write,
}

fn st(config: Option<&std::path::Path>, command: StCommand) -> walg_core::Result<()> {
    match command {
        StCommand::Ls { prefix } => st::ls(config, &prefix),
        StCommand::Get { object, dest, no_decrypt, no_decompress } => st::get(config, &object, &dest, !no_decrypt, !no_decompress),
        StCommand::Put { args, no_encrypt, no_compress, force, read_stdin } => {
            let opts = st::PutOptions { no_encrypt, no_compress, force };
            match (read_stdin, args.as_slice()) {
                (false, [local, dest]) => st::put(config, Some(std::path::Path::new(local)), dest, opts),
                (true, [dest]) => st::put(config, None, dest, opts),
                (false, _) => Err(walg_core::Error::InvalidArgument("st put needs LOCAL_PATH and DEST (or -s DEST to read stdin)".into())),
                (true, _) => Err(walg_core::Error::InvalidArgument("st put -s takes only DEST".into())),
            }
        }
        StCommand::Cat { object, decrypt, decompress } => st::cat(config, &object, decrypt, decompress),
        StCommand::Rm { prefix } => st::rm(config, &prefix),
        StCommand::Check { check: StCheck::Read { objects } } => st::check_read(config, &objects),
        StCommand::Check { check: StCheck::Write } => st::check_write(config),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let seg = cli.wal_segment_size;
    if !seg.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg) {
        let e = walg_core::Error::InvalidArgument(format!(
            "--wal-segment-size {seg}: must be a power of two from 1 MiB to 1 GiB"
        ));
        return exit::fail("", &e);
    }
    let result = match cli.command {
        Command::BackupFetch { target, name, recovery, tablespaces } => {
            recovery::backup_fetch(cli.config.as_deref(), &target, &name, &recovery, &tablespaces, seg)
        }
        Command::RestoreDrill { args } => drill::restore_drill(cli.config.as_deref(), &args, seg),
        Command::BackupList { json, detail } => manage::backup_list(cli.config.as_deref(), json, detail),
        Command::BackupMark { name, impermanent } => manage::backup_mark(cli.config.as_deref(), &name, impermanent),
        Command::WalShow { json } => manage::wal_show(cli.config.as_deref(), json, cli.wal_segment_size),
        Command::WalVerify { checks, json, current_segment } => {
            match manage::wal_verify(cli.config.as_deref(), &checks, json, current_segment.as_deref(), cli.wal_segment_size) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(exit::NOT_IN_STORAGE),
                Err(e) => Err(e),
            }
        }
        Command::Delete { args, after, confirm, json } => {
            manage::delete(cli.config.as_deref(), &args, after.as_deref(), confirm, json, cli.wal_segment_size)
        }
        Command::St { command } => st(cli.config.as_deref(), command),
        Command::Copy { from, to, all, mut backups, backup_name, with_history } => {
            backups.extend(backup_name);
            manage::copy(&from, &to, all, backups, with_history, seg)
        }
        Command::WalFetch { file, dest } => return commands::wal_fetch(cli.config.as_deref(), &file, &dest),
        Command::WalPrefetch { file, location } => commands::wal_prefetch(cli.config.as_deref(), &file, &location, seg),
        Command::WalPush { path } => commands::wal_push(cli.config.as_deref(), &path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::fail("", &e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
