//! Changed-block maps in storage: one object per archived WAL segment,
//! `walg_ext_blockmaps_005/<24 hex>.<ext>`, written by the archiver after the segment's upload and
//! read by the delta planner. Outside `wal_005/` so that WAL-G's and our WAL listings never see
//! them; encoded by the same pipeline as WAL (compressed, then encrypted with the WAL's key).
//!
//! The format is ours (WAL-G has no such objects). All integers are unsigned LEB128 varints
//! unless said otherwise; "bytes" is a varint length then the bytes; a string is bytes in UTF-8.
//!
//! ```text
//! magic     "WXBMAP" (6 bytes), version u8 = 1
//! scan      segment_lsn, system_id (u64 little-endian, 8 bytes), timeline, records
//! start     tag u8: 0 AtRecord | 1 AfterAbortedRecord | 2 MidRecord(None)
//!           | 3 MidRecord(Some(head)): segment_lsn, segment_end, rem_len, bytes
//! end       tag u8: 0 SegmentEnd | 1 Switch: lsn | 2 MidRecord: lsn (tail None)
//!           | 3 MidRecord: lsn, tail lsn, segment_end, tot_len, bytes | 4 InsideRecord
//!           | 5 Invalid: lsn, reason (string)
//! events    count, then each: lsn, tag u8, fields (a relation is spc, db, rel):
//!           0 Create rel, fork u8 | 1 Truncate rel, blocks, flags
//!           | 2 CreateDatabaseCopy db, spc, src_db, src_spc | 3 CreateDatabaseWalLog db, spc
//!           | 4 DropDatabase db, count, spc... | 5 CreateTablespace spc | 6 DropTablespace spc
//!           | 7 RelMapUpdate db, spc | 8 Drop rel, commit u8 (0/1) | 9 WalLevel level
//!           | 10 LogicalRewriteMapping
//! blocks    groups, then each group (strictly increasing by relation, fork): rel, fork u8,
//!           count (>= 1), first block, then count - 1 gaps to the next block (each >= 1)
//! crc       CRC-32C of every byte before it (u32 little-endian): a map stored without
//!           compression or encryption still has a check
//! ```
//!
//! Decoding accepts exactly this: anything else (other magic or version, a short or longer
//! object, an unknown tag, a value out of range, blocks out of order) is `Error::Corrupt`.

use super::{BlockRef, End, FileEvent, Head, RelFileNode, Scan, SegmentMap, Start, Tail};
use crate::codec::{find_object, read_error, Pipeline};
use crate::error::{Error, Result};
use crate::storage::Storage;
use std::io::Read;

/// Storage prefix of the maps: beside wal_005/, outside it so WAL-G and our WAL listings never
/// see them.
pub const MAP_PREFIX: &str = "walg_ext_blockmaps_005/";

const MAGIC: &[u8; 6] = b"WXBMAP";
const VERSION: u8 = 1;

/// A 24-hex WAL segment name (upper case, as PostgreSQL names them).
pub fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

fn crc32c(data: &[u8]) -> u32 {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    d.update(data);
    d.finalize() as u32
}

struct W(Vec<u8>);

impl W {
    fn v(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.0.push(x as u8 | 0x80);
            x >>= 7;
        }
        self.0.push(x as u8);
    }
    fn b(&mut self, x: u8) {
        self.0.push(x);
    }
    fn bytes(&mut self, x: &[u8]) {
        self.v(x.len() as u64);
        self.0.extend_from_slice(x);
    }
    fn rel(&mut self, r: &RelFileNode) {
        self.v(r.spc.into());
        self.v(r.db.into());
        self.v(r.rel.into());
    }
}

/// The map in the format of the module header.
pub fn encode(map: &SegmentMap) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(64 + map.blocks.len() * 3));
    w.0.extend_from_slice(MAGIC);
    w.b(VERSION);
    let s = &map.scan;
    w.v(s.segment_lsn);
    w.0.extend_from_slice(&s.system_id.to_le_bytes());
    w.v(s.timeline.into());
    w.v(s.records.into());
    match &s.start {
        Start::AtRecord => w.b(0),
        Start::AfterAbortedRecord => w.b(1),
        Start::MidRecord(None) => w.b(2),
        Start::MidRecord(Some(h)) => {
            w.b(3);
            w.v(h.segment_lsn);
            w.v(h.segment_end);
            w.v(h.rem_len.into());
            w.bytes(&h.bytes);
        }
    }
    match &s.end {
        End::SegmentEnd => w.b(0),
        End::Switch { lsn } => {
            w.b(1);
            w.v(*lsn);
        }
        End::MidRecord { lsn, tail: None } => {
            w.b(2);
            w.v(*lsn);
        }
        End::MidRecord { lsn, tail: Some(t) } => {
            w.b(3);
            w.v(*lsn);
            w.v(t.lsn);
            w.v(t.segment_end);
            w.v(t.tot_len.into());
            w.bytes(&t.bytes);
        }
        End::InsideRecord => w.b(4),
        End::Invalid { lsn, reason } => {
            w.b(5);
            w.v(*lsn);
            w.bytes(reason.as_bytes());
        }
    }
    w.v(map.events.len() as u64);
    for (lsn, e) in &map.events {
        w.v(*lsn);
        match e {
            FileEvent::Create { rel, fork } => {
                w.b(0);
                w.rel(rel);
                w.b(*fork);
            }
            FileEvent::Truncate { rel, blocks, flags } => {
                w.b(1);
                w.rel(rel);
                w.v((*blocks).into());
                w.v((*flags).into());
            }
            FileEvent::CreateDatabaseCopy { db, spc, src_db, src_spc } => {
                w.b(2);
                for x in [db, spc, src_db, src_spc] {
                    w.v((*x).into());
                }
            }
            FileEvent::CreateDatabaseWalLog { db, spc } => {
                w.b(3);
                w.v((*db).into());
                w.v((*spc).into());
            }
            FileEvent::DropDatabase { db, spcs } => {
                w.b(4);
                w.v((*db).into());
                w.v(spcs.len() as u64);
                for s in spcs {
                    w.v((*s).into());
                }
            }
            FileEvent::CreateTablespace { spc } => {
                w.b(5);
                w.v((*spc).into());
            }
            FileEvent::DropTablespace { spc } => {
                w.b(6);
                w.v((*spc).into());
            }
            FileEvent::RelMapUpdate { db, spc } => {
                w.b(7);
                w.v((*db).into());
                w.v((*spc).into());
            }
            FileEvent::Drop { rel, commit } => {
                w.b(8);
                w.rel(rel);
                w.b(*commit as u8);
            }
            FileEvent::WalLevel { level } => {
                w.b(9);
                w.v((*level).into());
            }
            FileEvent::LogicalRewriteMapping => w.b(10),
        }
    }
    // Blocks are sorted by (relation, fork, block): runs of one relation fork are contiguous.
    let groups: Vec<&[BlockRef]> = map.blocks.chunk_by(|a, b| a.rel == b.rel && a.fork == b.fork).collect();
    w.v(groups.len() as u64);
    for g in groups {
        w.rel(&g[0].rel);
        w.b(g[0].fork);
        w.v(g.len() as u64);
        w.v(g[0].block.into());
        for pair in g.windows(2) {
            w.v(u64::from(pair[1].block.wrapping_sub(pair[0].block)));
        }
    }
    let crc = crc32c(&w.0);
    w.0.extend_from_slice(&crc.to_le_bytes());
    w.0
}

/// Reads the format; every failure is a message for `Error::Corrupt`.
struct R<'a> {
    b: &'a [u8],
    at: usize,
}

type Res<T> = std::result::Result<T, String>;

impl R<'_> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
    fn b(&mut self) -> Res<u8> {
        let x = *self.b.get(self.at).ok_or_else(|| format!("truncated at byte {}", self.at))?;
        self.at += 1;
        Ok(x)
    }
    fn take(&mut self, n: usize) -> Res<&[u8]> {
        if n > self.left() {
            return Err(format!("truncated at byte {} ({n} bytes needed, {} left)", self.at, self.left()));
        }
        self.at += n;
        Ok(&self.b[self.at - n..self.at])
    }
    fn v(&mut self) -> Res<u64> {
        let start = self.at;
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.b()?;
            let bits = u64::from(byte & 0x7F);
            if shift == 63 && bits > 1 {
                break;
            }
            x |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err(format!("bad varint at byte {start}"))
    }
    fn v32(&mut self, what: &str) -> Res<u32> {
        let at = self.at;
        let x = self.v()?;
        u32::try_from(x).map_err(|_| format!("{what} {x} at byte {at} is out of range"))
    }
    /// A count of items that take at least one byte each: more than the bytes left is damage
    /// (and never a huge allocation).
    fn count(&mut self, what: &str) -> Res<usize> {
        let at = self.at;
        let n = self.v()?;
        if n > self.left() as u64 {
            return Err(format!("{what} count {n} at byte {at} exceeds the {} bytes left", self.left()));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self) -> Res<Vec<u8>> {
        let n = self.count("byte")?;
        Ok(self.take(n)?.to_vec())
    }
    fn rel(&mut self) -> Res<RelFileNode> {
        Ok(RelFileNode { spc: self.v32("tablespace")?, db: self.v32("database")?, rel: self.v32("relation")? })
    }
    fn tag(&mut self, what: &str, max: u8) -> Res<u8> {
        let at = self.at;
        let t = self.b()?;
        if t > max {
            return Err(format!("unknown {what} tag {t} at byte {at}"));
        }
        Ok(t)
    }
}

fn decode_body(r: &mut R) -> Res<SegmentMap> {
    let segment_lsn = r.v()?;
    let system_id = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let timeline = r.v32("timeline")?;
    let records = r.v32("record count")?;
    let start = match r.tag("start", 3)? {
        0 => Start::AtRecord,
        1 => Start::AfterAbortedRecord,
        2 => Start::MidRecord(None),
        _ => Start::MidRecord(Some(Head {
            segment_lsn: r.v()?,
            segment_end: r.v()?,
            rem_len: r.v32("rem_len")?,
            bytes: r.bytes()?,
        })),
    };
    let end = match r.tag("end", 5)? {
        0 => End::SegmentEnd,
        1 => End::Switch { lsn: r.v()? },
        2 => End::MidRecord { lsn: r.v()?, tail: None },
        3 => End::MidRecord {
            lsn: r.v()?,
            tail: Some(Tail { lsn: r.v()?, segment_end: r.v()?, tot_len: r.v32("tot_len")?, bytes: r.bytes()? }),
        },
        4 => End::InsideRecord,
        _ => {
            let lsn = r.v()?;
            let reason = String::from_utf8(r.bytes()?).map_err(|_| "reason is not UTF-8".to_string())?;
            End::Invalid { lsn, reason }
        }
    };
    let n = r.count("event")?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let lsn = r.v()?;
        let e = match r.tag("event", 10)? {
            0 => FileEvent::Create { rel: r.rel()?, fork: r.b()? },
            1 => FileEvent::Truncate { rel: r.rel()?, blocks: r.v32("blocks")?, flags: r.v32("flags")? },
            2 => FileEvent::CreateDatabaseCopy {
                db: r.v32("database")?,
                spc: r.v32("tablespace")?,
                src_db: r.v32("database")?,
                src_spc: r.v32("tablespace")?,
            },
            3 => FileEvent::CreateDatabaseWalLog { db: r.v32("database")?, spc: r.v32("tablespace")? },
            4 => {
                let db = r.v32("database")?;
                let k = r.count("tablespace")?;
                let spcs = (0..k).map(|_| r.v32("tablespace")).collect::<Res<Vec<u32>>>()?;
                FileEvent::DropDatabase { db, spcs }
            }
            5 => FileEvent::CreateTablespace { spc: r.v32("tablespace")? },
            6 => FileEvent::DropTablespace { spc: r.v32("tablespace")? },
            7 => FileEvent::RelMapUpdate { db: r.v32("database")?, spc: r.v32("tablespace")? },
            8 => {
                let rel = r.rel()?;
                let commit = r.tag("commit flag", 1)? == 1;
                FileEvent::Drop { rel, commit }
            }
            9 => FileEvent::WalLevel { level: r.v32("wal_level")? },
            _ => FileEvent::LogicalRewriteMapping,
        };
        events.push((lsn, e));
    }
    let groups = r.count("block group")?;
    let mut blocks: Vec<BlockRef> = Vec::new();
    for _ in 0..groups {
        let at = r.at;
        let rel = r.rel()?;
        let fork = r.b()?;
        let k = r.count("block")?;
        if k == 0 {
            return Err(format!("empty block group at byte {at}"));
        }
        let mut block = r.v32("block")?;
        let first = BlockRef { rel, fork, block };
        if blocks.last().is_some_and(|last| (last.rel, last.fork) >= (rel, fork)) {
            return Err(format!("block groups out of order at byte {at}"));
        }
        blocks.reserve(k);
        blocks.push(first);
        for _ in 1..k {
            let at = r.at;
            let gap = r.v()?;
            block = u32::try_from(u64::from(block) + gap)
                .ok()
                .filter(|_| gap >= 1)
                .ok_or_else(|| format!("block gap {gap} at byte {at} is out of range"))?;
            blocks.push(BlockRef { rel, fork, block });
        }
    }
    Ok(SegmentMap {
        scan: Scan { segment_lsn, system_id, timeline, start, end, records },
        blocks,
        events,
    })
}

/// Any malformation (bad magic/version, truncated, trailing bytes, unknown enum tag, unsorted
/// blocks) is `Error::Corrupt` naming `object`; never panics on any input.
pub fn decode(bytes: &[u8], object: &str) -> Result<SegmentMap> {
    let corrupt = |msg: String| Error::Corrupt { object: object.to_string(), msg: format!("changed-block map: {msg}") };
    if bytes.len() < MAGIC.len() + 1 + 4 {
        return Err(corrupt(format!("{} bytes is too short for a map", bytes.len())));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a changed-block map (bad magic)".into()));
    }
    if bytes[MAGIC.len()] != VERSION {
        return Err(corrupt(format!("format version {} is not {VERSION}, the one this build reads", bytes[MAGIC.len()])));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(corrupt("CRC-32C mismatch (damaged, truncated or extended)".into()));
    }
    let mut r = R { b: body, at: MAGIC.len() + 1 };
    let map = decode_body(&mut r).map_err(corrupt)?;
    if r.left() != 0 {
        return Err(corrupt(format!("{} trailing bytes after the blocks", r.left())));
    }
    Ok(map)
}

fn check_segment(segment: &str) -> Result<()> {
    if is_segment_name(segment) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{segment:?} is not a WAL segment name (24 hex digits)")))
    }
}

/// Store the map of WAL segment `segment` (24 hex chars) through `pipeline` (compressed/encrypted
/// like WAL) as MAP_PREFIX + segment + the pipeline's extension. Returns the key.
pub fn put_map(pipeline: &Pipeline, storage: &dyn Storage, segment: &str, map: &SegmentMap) -> Result<String> {
    check_segment(segment)?;
    let key = pipeline.object_name(&format!("{MAP_PREFIX}{segment}"));
    let data = pipeline.encode_bytes(&encode(map))?;
    storage.put(&key, &data)?;
    Ok(key)
}

/// Ok(None) ONLY when storage answered that no map object for that segment exists (any
/// extension, as for WAL); unreachable storage is an Err, a damaged object is Err(Corrupt).
pub fn get_map(pipeline: &Pipeline, storage: &dyn Storage, segment: &str) -> Result<Option<SegmentMap>> {
    check_segment(segment)?;
    let Some(key) = find_object(storage, &format!("{MAP_PREFIX}{segment}"))? else { return Ok(None) };
    // Deleted between the probe and the read (retention): also an answer that it is not there.
    let Some(mut r) = pipeline.open(storage, &key)? else { return Ok(None) };
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes).map_err(|e| pipeline.explain(read_error(&key, e)))?;
    decode(&bytes, &key).map(Some)
}

#[cfg(test)]
#[path = "stored_tests.rs"]
mod tests;
