//! File-level changes that records make without naming every block: the rmgr-specific main data
//! of the storage, database, tablespace, relation map, transaction and heap2 resource managers
//! (catalog/storage_xlog.h, commands/dbcommands_xlog.h, commands/tablespace.h, utils/relmapper.h,
//! access/xact.h, access/heapam_xlog.h of PostgreSQL 15).

use super::page::u32_at;
use super::record::RM_XLOG;
use super::RelFileNode;

const RM_XACT: u8 = 1;
const RM_SMGR: u8 = 2;
const RM_DBASE: u8 = 4;
const RM_TBLSPC: u8 = 5;
const RM_RELMAP: u8 = 7;
const RM_HEAP2: u8 = 9;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEvent {
    /// `XLOG_SMGR_CREATE`: the fork's file is created (empty) at redo.
    Create {
        rel: RelFileNode,
        fork: u8,
    },
    /// `XLOG_SMGR_TRUNCATE` to `blocks` blocks; `flags` says which forks (1 main, 2 vm, 4 fsm).
    Truncate {
        rel: RelFileNode,
        blocks: u32,
        flags: u32,
    },
    /// `XLOG_DBASE_CREATE_FILE_COPY`: the directory of `src_db` in `src_spc` is copied file by
    /// file with no WAL for its pages.
    CreateDatabaseCopy {
        db: u32,
        spc: u32,
        src_db: u32,
        src_spc: u32,
    },
    /// `XLOG_DBASE_CREATE_WAL_LOG`: the directory is created; its relations follow as smgr
    /// creates and page images, its relation map as a relmap update.
    CreateDatabaseWalLog {
        db: u32,
        spc: u32,
    },
    /// `XLOG_DBASE_DROP`: the database's directory in each tablespace is removed.
    DropDatabase {
        db: u32,
        spcs: Vec<u32>,
    },
    /// `XLOG_TBLSPC_CREATE` / `XLOG_TBLSPC_DROP`: the tablespace's directory and link.
    CreateTablespace {
        spc: u32,
    },
    DropTablespace {
        spc: u32,
    },
    /// `XLOG_RELMAP_UPDATE`: `pg_filenode.map` of database `db` (0: the global one) is rewritten.
    RelMapUpdate {
        db: u32,
        spc: u32,
    },
    /// A transaction's commit or abort (prepared or not) removes the relation's files (all forks).
    Drop {
        rel: RelFileNode,
        commit: bool,
    },
    /// `XLOG_PARAMETER_CHANGE` with the new `wal_level` (0 minimal, 1 replica, 2 logical). Under
    /// `minimal`, relations created or rewritten in a transaction are fsynced at commit instead of
    /// WAL-logged page by page, so a map covering such a stretch must not be trusted.
    WalLevel {
        level: u32,
    },
    /// `XLOG_HEAP2_REWRITE`: a logical rewrite mapping file under `pg_logical/mappings` (not a
    /// relation file).
    LogicalRewriteMapping,
}

fn rnode(b: &[u8], at: usize) -> RelFileNode {
    RelFileNode {
        spc: u32_at(b, at),
        db: u32_at(b, at + 4),
        rel: u32_at(b, at + 8),
    }
}

/// The events of one record (`info` is `xl_info`), read from its main data. A main data too short
/// for its kind is an error: the record is not what PostgreSQL 15 writes.
pub fn decode(
    rmid: u8,
    info: u8,
    main: &[u8],
    out: &mut dyn FnMut(FileEvent),
) -> Result<(), String> {
    let need = |n: usize| -> Result<(), String> {
        if main.len() < n {
            Err(format!(
                "rmgr {rmid} info {info:#04X}: main data of {} bytes, {n} needed",
                main.len()
            ))
        } else {
            Ok(())
        }
    };
    let kind = info & 0xF0;
    match rmid {
        RM_SMGR if kind == 0x10 => {
            need(16)?;
            out(FileEvent::Create {
                rel: rnode(main, 0),
                fork: u32_at(main, 12) as u8,
            });
        }
        RM_SMGR if kind == 0x20 => {
            need(20)?;
            out(FileEvent::Truncate {
                rel: rnode(main, 4),
                blocks: u32_at(main, 0),
                flags: u32_at(main, 16),
            });
        }
        RM_DBASE if kind == 0x00 => {
            need(16)?;
            let w = |i: usize| u32_at(main, 4 * i);
            out(FileEvent::CreateDatabaseCopy {
                db: w(0),
                spc: w(1),
                src_db: w(2),
                src_spc: w(3),
            });
        }
        RM_DBASE if kind == 0x10 => {
            need(8)?;
            out(FileEvent::CreateDatabaseWalLog {
                db: u32_at(main, 0),
                spc: u32_at(main, 4),
            });
        }
        RM_DBASE if kind == 0x20 => {
            need(8)?;
            let n = u32_at(main, 4) as usize;
            need(8 + 4 * n)?;
            let spcs = (0..n).map(|i| u32_at(main, 8 + 4 * i)).collect();
            out(FileEvent::DropDatabase {
                db: u32_at(main, 0),
                spcs,
            });
        }
        RM_TBLSPC if kind == 0x00 => {
            need(4)?;
            out(FileEvent::CreateTablespace {
                spc: u32_at(main, 0),
            });
        }
        RM_TBLSPC if kind == 0x10 => {
            need(4)?;
            out(FileEvent::DropTablespace {
                spc: u32_at(main, 0),
            });
        }
        RM_RELMAP if kind == 0x00 => {
            need(12)?;
            out(FileEvent::RelMapUpdate {
                db: u32_at(main, 0),
                spc: u32_at(main, 4),
            });
        }
        RM_HEAP2 if kind == 0x00 => out(FileEvent::LogicalRewriteMapping),
        RM_XLOG if kind == 0x60 => {
            // xl_parameter_change: five ints, then wal_level.
            need(24)?;
            out(FileEvent::WalLevel {
                level: u32_at(main, 20),
            });
        }
        RM_XACT => xact(info, main, out)?,
        _ => {}
    }
    Ok(())
}

/// Commit and abort records (also of prepared transactions) list the relations whose files go:
/// `xl_xact_commit`/`xl_xact_abort` (the time), then, if `XLOG_XACT_HAS_INFO`, `xinfo` and the
/// optional parts in this order: dbinfo, subxacts, relfilenodes.
fn xact(info: u8, main: &[u8], out: &mut dyn FnMut(FileEvent)) -> Result<(), String> {
    let commit = match info & 0x70 {
        0x00 | 0x30 => true,
        0x20 | 0x40 => false,
        _ => return Ok(()),
    };
    if info & 0x80 == 0 {
        return Ok(());
    }
    let short = || {
        format!(
            "xact info {info:#04X}: main data of {} bytes is too short",
            main.len()
        )
    };
    let mut at = 8;
    if main.len() < at + 4 {
        return Err(short());
    }
    let xinfo = u32_at(main, at);
    at += 4;
    if xinfo & 1 != 0 {
        at += 8;
    }
    if xinfo & 2 != 0 {
        if main.len() < at + 4 {
            return Err(short());
        }
        at += 4 + 4 * u32_at(main, at) as usize;
    }
    if xinfo & 4 != 0 {
        if main.len() < at + 4 {
            return Err(short());
        }
        let n = u32_at(main, at) as usize;
        at += 4;
        if main.len() < at + 12 * n {
            return Err(short());
        }
        for i in 0..n {
            out(FileEvent::Drop {
                rel: rnode(main, at + 12 * i),
                commit,
            });
        }
    }
    Ok(())
}
