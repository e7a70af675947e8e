//! walg-ext: the restore side of walg_ext (works while the server is down) and operator commands.
//! Configuration: a `--config` file
//! (WAL-G's JSON/YAML keys) is read first and the environment overrides it, as in WAL-G.
mod commands;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "walg-ext", version, about = "Restore and inspect walg_ext / WAL-G backups")]
struct Cli {
    /// WAL-G configuration file (JSON or YAML with WAL-G key names, e.g. WALG_FILE_PREFIX).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Restore a base backup into an empty directory (LATEST = newest backup).
    BackupFetch {
        /// Target data directory; must not exist or be empty.
        target: PathBuf,
        /// Backup name (base_...) or LATEST.
        name: String,
    },
    /// List backups.
    BackupList {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Add start/finish times, LSNs, sizes, host and data directory.
        #[arg(long)]
        detail: bool,
    },
    /// Fetch one WAL file (for restore_command = 'walg-ext wal-fetch %f %p').
    /// Exit 0: fetched; 1: not in storage; 126: any other failure (recovery stops).
    WalFetch {
        /// WAL file name, e.g. 000000010000000000000004 or 00000002.history.
        file: String,
        /// Where to write it (%p).
        dest: PathBuf,
    },
    /// Archive one WAL file (for archive_command = 'walg-ext wal-push %p').
    WalPush {
        /// Path of the WAL file (its base name is the WAL file name).
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BackupFetch { target, name } => commands::backup_fetch(cli.config.as_deref(), &target, &name),
        Command::BackupList { json, detail } => commands::backup_list(cli.config.as_deref(), json, detail),
        Command::WalFetch { file, dest } => return commands::wal_fetch(cli.config.as_deref(), &file, &dest),
        Command::WalPush { path } => commands::wal_push(cli.config.as_deref(), &path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walg-ext: {e}");
            ExitCode::FAILURE
        }
    }
}
