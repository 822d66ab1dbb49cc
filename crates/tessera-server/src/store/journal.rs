//! The grant journal: every change to the key table appended to a segment
//! file written in place, one write and (when the batch holds a new grant)
//! one `fdatasync` per batch, then folded into the `redb` table in the
//! background once the segment is full.
//!
//! A segment is made whole before it is written to, so that syncing a batch
//! later flushes the batch's pages and nothing else (no block allocation,
//! no size change): the first ones are zero-filled to their size and
//! synced, later ones are folded segments used again (their first eight
//! bytes zeroed and synced, then renamed), which costs a rename instead of
//! writing and syncing a whole segment while the writer syncs its batches.
//! Segments are named by a number that only grows
//! (`journal/0000000000000007.log`); the table remembers the last number
//! folded into it (`journal_through`), in the same transaction as the fold,
//! and a segment numbered at or below it is a spare.
//!
//! A record is `u32 length | u32 CRC-32 | payload`, the checksum taken over
//! the segment's number, the length and the payload, and a payload is
//! `u8 kind | u16 id length | id | rest`: for a new grant (kind 1, or 2 when
//! its id was made for it by a checkout) the grant's JSON as the table keeps
//! it, for a removal (kind 3) the grant's `issued_unix_ms`. Each batch is
//! written with eight zero bytes after it (a length of zero: the end of what
//! was written), which the next batch overwrites, so what a used-again
//! segment held before never reads as records; and a stale record that a
//! torn write left in place fails its checksum under the new number. A
//! record whose checksum fails is a write the crash cut short, and ends the
//! journal, unless a later segment holds records: segments are synced
//! whole before the next one is written, so that is a damaged disk and the
//! store refuses to open.
//!
//! What a window of segments changed is kept in memory as its net effect on
//! each grant ([`Pending`]): a checkout checked in before its segment is
//! folded costs the table nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableTable, StorageBackend, Table};
use tessera_core::SharedText;

use super::{StoreOp, StoredGrant, GRANTS, META};
use crate::seams::Disk;

/// The journal's folder inside the data directory.
pub const JOURNAL_DIR: &str = "journal";
/// The table's record of the last segment folded into it.
const THROUGH_KEY: &str = "journal_through";
const HEADER_BYTES: usize = 8;
/// No record comes near this; a length above it is damage.
const RECORD_MAX: usize = 1 << 20;
const KIND_PUT: u8 = 1;
const KIND_PUT_FRESH: u8 = 2;
const KIND_DELETE: u8 = 3;
/// Zeros written at a time when a segment is made.
const FILL_CHUNK: usize = 1 << 20;
/// The end of what was written: a record length of zero.
const END_MARK: [u8; HEADER_BYTES] = [0; HEADER_BYTES];
/// Folded segments kept to be used again.
const SPARES_MAX: usize = 2;

/// What the changes since the last fold did to each grant.
#[derive(Debug, Default)]
pub struct Pending {
    grants: HashMap<SharedText, Net>,
}

#[derive(Debug)]
enum Net {
    /// Stored as this, whatever the table held. `fresh`: the table has
    /// never held this id (a checkout made it), so a removal later in the
    /// window leaves nothing to do.
    Put { grant: StoredGrant, fresh: bool },
    /// Removed, whatever the table held.
    Gone,
    /// Removed if the table holds the grant issued at one of these times.
    RemoveIf(Vec<i64>),
}

impl Pending {
    /// Takes one more change, in the order the writer took them.
    pub fn record(&mut self, op: StoreOp) {
        match op {
            StoreOp::Put(id, grant, fresh) => {
                let fresh = match self.grants.get(&id) {
                    None => fresh,
                    Some(Net::Put { fresh, .. }) => *fresh,
                    Some(Net::Gone | Net::RemoveIf(_)) => false,
                };
                self.grants.insert(id, Net::Put { grant, fresh });
            }
            StoreOp::Delete(id, issued_unix_ms) => match self.grants.get_mut(&id) {
                None => {
                    self.grants.insert(id, Net::RemoveIf(vec![issued_unix_ms]));
                }
                Some(Net::Put { grant, fresh }) if grant.issued_unix_ms == issued_unix_ms => {
                    if *fresh {
                        self.grants.remove(&id);
                    } else {
                        self.grants.insert(id, Net::Gone);
                    }
                }
                Some(Net::Put { .. } | Net::Gone) => {}
                Some(Net::RemoveIf(times)) => times.push(issued_unix_ms),
            },
        }
    }

    /// Applies the window to the table, as applying its changes one by one
    /// would have.
    fn apply(&self, table: &mut Table<&str, &[u8]>) -> Result<(), String> {
        for (id, net) in &self.grants {
            match net {
                Net::Put { grant, .. } => {
                    let bytes = serde_json::to_vec(grant).map_err(|e| e.to_string())?;
                    table
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                Net::Gone => {
                    table.remove(id.as_str()).map_err(|e| e.to_string())?;
                }
                Net::RemoveIf(times) => {
                    let stored = table
                        .get(id.as_str())
                        .map_err(|e| e.to_string())?
                        .and_then(|v| serde_json::from_slice::<StoredGrant>(v.value()).ok());
                    if stored.is_some_and(|g| times.contains(&g.issued_unix_ms)) {
                        table.remove(id.as_str()).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The changes of every segment up to `through`, to fold into the table.
pub struct Window {
    pub through: u64,
    pub pending: Pending,
}

/// Appends `op` as one record of segment `seq` to `out`.
#[cfg(test)]
pub fn encode(op: &StoreOp, seq: u64, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    encode_unsealed(op, out)?;
    seal(&mut out[start..], seq);
    Ok(())
}

/// Appends `op` as one record to `out`, its checksum left for [`seal`]:
/// which segment the record lands in is known only when it is written.
fn encode_unsealed(op: &StoreOp, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    let (kind, id) = match op {
        StoreOp::Put(id, _, false) => (KIND_PUT, id),
        StoreOp::Put(id, _, true) => (KIND_PUT_FRESH, id),
        StoreOp::Delete(id, _) => (KIND_DELETE, id),
    };
    let id_len = u16::try_from(id.len()).map_err(|_| format!("grant id of {} bytes", id.len()))?;
    out.push(kind);
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    match op {
        StoreOp::Put(_, grant, _) => {
            serde_json::to_writer(&mut *out, grant).map_err(|e| e.to_string())?
        }
        StoreOp::Delete(_, issued_unix_ms) => out.extend_from_slice(&issued_unix_ms.to_le_bytes()),
    }
    let len = out.len() - start - HEADER_BYTES;
    if len > RECORD_MAX {
        out.truncate(start);
        return Err(format!("a journal record of {len} bytes"));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Sets the checksum of the one whole record in `record` for segment `seq`.
fn seal(record: &mut [u8], seq: u64) {
    let len: [u8; 4] = record[..4].try_into().expect("a record header");
    let crc = checksum(seq, &len, &record[HEADER_BYTES..]);
    record[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(seq: u64, len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

/// How reading a segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// At a zero length or the segment's end: what was written was whole.
    Clean,
    /// At a record that fails its checksum or cannot be read, at this offset.
    Damaged { offset: usize, why: String },
}

/// The changes segment `seq` holds, in order, and how reading ended.
pub(super) fn decode(bytes: &[u8], seq: u64) -> (Vec<StoreOp>, End) {
    let mut ops = Vec::new();
    let mut at = 0;
    loop {
        if at + HEADER_BYTES > bytes.len() {
            return (ops, End::Clean);
        }
        let len_bytes: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len == 0 {
            return (ops, End::Clean);
        }
        let damaged = |why: &str| End::Damaged {
            offset: at,
            why: why.to_string(),
        };
        if len > RECORD_MAX || at + HEADER_BYTES + len > bytes.len() {
            return (ops, damaged("its length runs past the segment"));
        }
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let payload = &bytes[at + HEADER_BYTES..at + HEADER_BYTES + len];
        if checksum(seq, &len_bytes, payload) != crc {
            return (ops, damaged("its checksum does not match"));
        }
        match decode_payload(payload) {
            Ok(op) => ops.push(op),
            Err(why) => return (ops, damaged(&why)),
        }
        at += HEADER_BYTES + len;
    }
}

fn decode_payload(payload: &[u8]) -> Result<StoreOp, String> {
    let short = || "the record is cut short".to_string();
    let (&kind, rest) = payload.split_first().ok_or_else(short)?;
    let id_len = u16::from_le_bytes(rest.get(..2).ok_or_else(short)?.try_into().expect("2"));
    let rest = &rest[2..];
    let id = rest.get(..id_len as usize).ok_or_else(short)?;
    let id = SharedText::from(
        std::str::from_utf8(id).map_err(|_| "the grant id is not UTF-8".to_string())?,
    );
    let rest = &rest[id_len as usize..];
    match kind {
        KIND_PUT | KIND_PUT_FRESH => {
            let grant = serde_json::from_slice(rest).map_err(|e| format!("the grant: {e}"))?;
            Ok(StoreOp::Put(id, grant, kind == KIND_PUT_FRESH))
        }
        KIND_DELETE => {
            let issued: [u8; 8] = rest.try_into().map_err(|_| short())?;
            Ok(StoreOp::Delete(id, i64::from_le_bytes(issued)))
        }
        other => Err(format!("unknown record kind {other}")),
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.log"))
}

/// The segments in `dir`, by number.
fn segments(disk: &dyn Disk, dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found: Vec<(u64, PathBuf)> = disk
        .list_dir(dir)?
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let number = name.strip_suffix(".log")?;
            (number.len() == 16)
                .then(|| u64::from_str_radix(number, 16).ok())
                .flatten()
                .map(|seq| (seq, path))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The segment files made so far, shared by the writer (which needs the
/// next one when it rolls) and the folder (which makes them ahead of it).
pub struct Segments {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    bytes: u64,
    made: Mutex<Made>,
}

struct Made {
    /// Every segment up to this number has been made whole.
    through: u64,
    /// Folded segments to use again, newest last.
    spares: Vec<PathBuf>,
}

impl Segments {
    /// Makes segment `seq` (and any before it not yet made) whole on disk.
    pub fn make(&self, seq: u64) -> std::io::Result<()> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        while made.through < seq {
            let next = made.through + 1;
            let path = segment_path(&self.dir, next);
            let mut reused = false;
            while let Some(spare) = made.spares.pop() {
                if self.reuse(&spare, &path)? {
                    reused = true;
                    break;
                }
            }
            if !reused {
                self.fill(&path)?;
            }
            made.through = next;
        }
        Ok(())
    }

    /// Zero-fills a new segment at `path` and syncs it, folder included.
    fn fill(&self, path: &Path) -> std::io::Result<()> {
        let file = self.disk.open_file(path)?;
        let zeros = vec![0u8; FILL_CHUNK.min(self.bytes as usize)];
        let mut at = 0;
        while at < self.bytes {
            let n = zeros.len().min((self.bytes - at) as usize);
            file.write(at, &zeros[..n])?;
            at += n as u64;
        }
        file.sync_data(false)?;
        drop(file);
        self.disk.sync_dir(&self.dir)
    }

    /// Makes the folded segment `spare` the segment at `path`: its first
    /// record becomes the end mark (synced before the rename, so no crash
    /// leaves a numbered segment that starts with what it held before).
    /// `false` (and the spare removed) when it is not a segment's size.
    fn reuse(&self, spare: &Path, path: &Path) -> std::io::Result<bool> {
        let file = self.disk.open_file(spare)?;
        if file.len()? != self.bytes {
            drop(file);
            self.disk.remove_file(spare)?;
            return Ok(false);
        }
        file.write(0, &END_MARK)?;
        file.sync_data(false)?;
        drop(file);
        if !self.disk.rename(spare, path)? {
            return Ok(false);
        }
        self.disk.sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Every segment up to `through` is in the table now: the newest are
    /// kept as spares, the rest removed.
    fn retire_through(&self, through: u64) -> std::io::Result<()> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let mut removed = false;
        for (seq, path) in segments(self.disk.as_ref(), &self.dir)? {
            if seq > through || made.spares.contains(&path) {
                continue;
            }
            made.spares.push(path);
        }
        while made.spares.len() > SPARES_MAX {
            let oldest = made.spares.remove(0);
            self.disk.remove_file(&oldest)?;
            removed = true;
        }
        if removed {
            self.disk.sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// The writer's end: the segment being written and the window's changes.
pub struct Journal {
    segments: Arc<Segments>,
    seq: u64,
    file: Box<dyn StorageBackend>,
    written: u64,
    unsynced: bool,
    pending: Pending,
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Set by the first failed write or sync; every later batch fails with
    /// it: after a failed sync, what reached the disk is unknown.
    failed: Option<String>,
}

impl Journal {
    /// The number of the segment being written.
    pub fn writing(&self) -> u64 {
        self.seq
    }

    /// Writes `ops` as records, in order, syncing at the end if `sync`.
    /// A full segment is synced and handed to `fold` with its window.
    pub fn append(
        &mut self,
        ops: Vec<StoreOp>,
        sync: bool,
        fold: &mut dyn FnMut(Window),
    ) -> Result<(), String> {
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        let result = self.append_inner(ops, sync, fold);
        if let Err(err) = &result {
            self.failed = Some(format!("the grant journal stopped at an error: {err}"));
        }
        result
    }

    fn append_inner(
        &mut self,
        ops: Vec<StoreOp>,
        sync: bool,
        fold: &mut dyn FnMut(Window),
    ) -> Result<(), String> {
        self.buf.clear();
        self.ends.clear();
        for op in &ops {
            encode_unsealed(op, &mut self.buf)?;
            self.ends.push(self.buf.len());
        }
        self.buf.extend_from_slice(&END_MARK);
        let mut ops = ops.into_iter();
        let (mut first, mut from) = (0, 0);
        while first < self.ends.len() {
            let room = (self.segments.bytes - self.written) as usize;
            let fits = self.ends[first..]
                .iter()
                .take_while(|&&end| end - from <= room)
                .count();
            if fits == 0 {
                if self.ends[first] - from > self.segments.bytes as usize {
                    return Err(format!(
                        "a record of {} bytes does not fit a segment",
                        self.ends[first] - from
                    ));
                }
                self.roll(fold)?;
                continue;
            }
            let to = self.ends[first + fits - 1];
            let mut start = from;
            for &end in &self.ends[first..first + fits] {
                seal(&mut self.buf[start..end], self.seq);
                start = end;
            }
            // The end mark goes with the batch's last records when it fits;
            // otherwise the segment's end (or the roll's mark) ends them.
            let marked = if first + fits == self.ends.len() && to - from + HEADER_BYTES <= room {
                to + HEADER_BYTES
            } else {
                to
            };
            self.file
                .write(self.written, &self.buf[from..marked])
                .map_err(|e| format!("write: {e}"))?;
            self.written += (to - from) as u64;
            self.unsynced = true;
            for op in ops.by_ref().take(fits) {
                self.pending.record(op);
            }
            (first, from) = (first + fits, to);
        }
        if sync && self.unsynced {
            self.file
                .sync_data(false)
                .map_err(|e| format!("sync: {e}"))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Syncs the full segment, hands its window to `fold` and moves on to
    /// the next segment.
    fn roll(&mut self, fold: &mut dyn FnMut(Window)) -> Result<(), String> {
        if self.segments.bytes - self.written >= HEADER_BYTES as u64 {
            self.file
                .write(self.written, &END_MARK)
                .map_err(|e| format!("write: {e}"))?;
            self.unsynced = true;
        }
        if self.unsynced {
            self.file
                .sync_data(false)
                .map_err(|e| format!("sync: {e}"))?;
            self.unsynced = false;
        }
        let next = self.seq + 1;
        self.segments
            .make(next)
            .map_err(|e| format!("making segment {next}: {e}"))?;
        self.file = self
            .segments
            .disk
            .open_file(&segment_path(&self.segments.dir, next))
            .map_err(|e| format!("opening segment {next}: {e}"))?;
        let window = Window {
            through: self.seq,
            pending: std::mem::take(&mut self.pending),
        };
        (self.seq, self.written) = (next, 0);
        fold(window);
        Ok(())
    }
}

/// The folder's end: applies windows to the table, in order, each with the
/// number of its last segment, then removes those segments.
pub struct Folder {
    db: Arc<Database>,
    segments: Arc<Segments>,
    /// Windows not yet in the table (a fold failed): tried again, in order,
    /// with the next.
    waiting: Vec<Window>,
}

impl Folder {
    /// Makes the segment after the writer's, so that its first roll finds
    /// it ready.
    pub fn make_next(&self, writing: u64) {
        if let Err(err) = self.segments.make(writing + 1) {
            tracing::warn!("grant journal: making segment {}: {err}", writing + 1);
        }
    }

    pub fn fold(&mut self, window: Window) {
        let through = window.through;
        self.waiting.push(window);
        match fold_into(&self.db, &self.waiting, through) {
            Ok(()) => {
                self.waiting.clear();
                if let Err(err) = self.segments.retire_through(through) {
                    tracing::warn!("grant journal: retiring folded segments: {err}");
                }
            }
            Err(err) => tracing::error!(
                "grant journal: folding segments up to {through} into the table failed \
                 ({err}); they stay on disk and in memory, and are tried again with the next"
            ),
        }
        // The writer's next segment but one, made ahead of it.
        if let Err(err) = self.segments.make(through + 2) {
            tracing::warn!("grant journal: making segment {}: {err}", through + 2);
        }
    }
}

/// Applies `windows` and records `through`, in one durable transaction.
fn fold_into(db: &Database, windows: &[Window], through: u64) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(Durability::Immediate);
    {
        let mut table = txn.open_table(GRANTS).map_err(|e| e.to_string())?;
        for window in windows {
            window.pending.apply(&mut table)?;
        }
    }
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        meta.insert(THROUGH_KEY, through.to_string().as_str())
            .map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

/// Replays the journal into the table at start, then begins a new one.
/// Returns the writer's end and the folder's.
pub fn open(
    disk: &Arc<dyn Disk>,
    data_dir: &Path,
    db: &Arc<Database>,
) -> Result<(Journal, Folder), String> {
    let dir = data_dir.join(JOURNAL_DIR);
    let through = {
        let read = db.begin_read().map_err(|e| e.to_string())?;
        let meta = read.open_table(META).map_err(|e| e.to_string())?;
        let value = meta.get(THROUGH_KEY).map_err(|e| e.to_string())?;
        match value {
            None => 0,
            Some(value) => value
                .value()
                .parse::<u64>()
                .map_err(|_| format!("{THROUGH_KEY} is `{}`", value.value()))?,
        }
    };
    disk.create_dir(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let found = segments(disk.as_ref(), &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut pending = Pending::default();
    let mut last = through;
    let mut cut: Option<(PathBuf, usize, String)> = None;
    for (seq, path) in &found {
        last = last.max(*seq);
        if *seq <= through {
            continue;
        }
        let file = disk
            .open_file(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.len().map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes = file
            .read(0, len as usize)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (ops, end) = decode(&bytes, *seq);
        if let (Some((cut_path, offset, why)), false) = (&cut, ops.is_empty()) {
            return Err(format!(
                "the grant journal is damaged: {} at byte {offset} ({why}), and a later segment \
                 holds grants; move grants.redb and the {JOURNAL_DIR} folder away: the server \
                 then starts empty and waits out one lease before issuing",
                cut_path.display()
            ));
        }
        for op in ops {
            pending.record(op);
        }
        if let End::Damaged { offset, why } = end {
            tracing::warn!(
                "grant journal {}: ends at byte {offset} ({why}): a write a crash cut short, \
                 never acknowledged",
                path.display()
            );
            cut.get_or_insert((path.clone(), offset, why));
        }
    }
    let segments = Arc::new(Segments {
        disk: disk.clone(),
        dir: dir.clone(),
        bytes: disk.journal_segment_bytes(),
        made: Mutex::new(Made {
            through: last,
            spares: Vec::new(),
        }),
    });
    let window = Window {
        through: last,
        pending,
    };
    fold_into(db, &[window], last)?;
    segments
        .retire_through(last)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let seq = last + 1;
    segments
        .make(seq)
        .map_err(|e| format!("making segment {seq}: {e}"))?;
    let file = disk
        .open_file(&segment_path(&dir, seq))
        .map_err(|e| format!("opening segment {seq}: {e}"))?;
    let journal = Journal {
        segments: segments.clone(),
        seq,
        file,
        written: 0,
        unsynced: false,
        pending: Pending::default(),
        buf: Vec::new(),
        ends: Vec::new(),
        failed: None,
    };
    let folder = Folder {
        db: db.clone(),
        segments,
        waiting: Vec::new(),
    };
    Ok((journal, folder))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A grant as the store's tests write it.
    pub(in crate::store) fn grant(issued: i64) -> StoredGrant {
        StoredGrant {
            feature: "cad".into(),
            count: 1,
            client_id: "c".into(),
            user: "u".into(),
            host: "h".into(),
            display: None,
            version: "1.0".into(),
            issued_unix_ms: issued,
        }
    }

    #[test]
    fn records_round_trip_and_a_cut_or_flipped_record_ends_the_segment() {
        let ops = vec![
            StoreOp::Put("g1".into(), grant(5), true),
            StoreOp::Put("g2".into(), grant(6), false),
            StoreOp::Delete("g1".into(), 5),
        ];
        let mut bytes = Vec::new();
        for op in &ops {
            encode(op, 7, &mut bytes).unwrap();
        }
        let whole = bytes.len();
        bytes.extend_from_slice(&[0; 64]);
        let (read, end) = decode(&bytes, 7);
        assert_eq!(read, ops);
        assert_eq!(end, End::Clean);

        // A write cut short: the last record's tail never reached the disk.
        let mut cut = bytes.clone();
        cut[whole - 8..whole].fill(0);
        let (read, end) = decode(&cut, 7);
        assert_eq!(read, ops[..2]);
        assert!(matches!(end, End::Damaged { .. }), "{end:?}");

        // One flipped bit in the first record ends the journal there.
        let mut flipped = bytes.clone();
        flipped[HEADER_BYTES + 3] ^= 0x10;
        let (read, end) = decode(&flipped, 7);
        assert!(read.is_empty());
        assert!(matches!(end, End::Damaged { offset: 0, .. }), "{end:?}");

        // A length that runs past the segment.
        let mut long = bytes.clone();
        long[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&long, 7).1, End::Damaged { offset: 0, .. }));

        // Whole records of another segment (what a used-again segment held
        // before) are not this one's.
        let (read, end) = decode(&bytes, 6);
        assert!(read.is_empty());
        assert!(matches!(end, End::Damaged { offset: 0, .. }), "{end:?}");
    }

    #[test]
    fn a_window_nets_out_changes_as_applying_them_in_turn_would() {
        let mut pending = Pending::default();
        // A checkout checked in within the window: nothing left to do.
        pending.record(StoreOp::Put("a".into(), grant(1), true));
        pending.record(StoreOp::Delete("a".into(), 1));
        // A conversion checked in: the table may hold an older copy.
        pending.record(StoreOp::Put("b".into(), grant(2), false));
        pending.record(StoreOp::Delete("b".into(), 2));
        // A removal of an older grant under the same id leaves the newer.
        pending.record(StoreOp::Put("c".into(), grant(3), true));
        pending.record(StoreOp::Delete("c".into(), 1));
        // Removals of grants the table holds from earlier windows.
        pending.record(StoreOp::Delete("d".into(), 4));
        pending.record(StoreOp::Delete("d".into(), 5));
        assert!(!pending.grants.contains_key("a"));
        assert!(matches!(pending.grants["b"], Net::Gone));
        assert!(
            matches!(&pending.grants["c"], Net::Put { grant, .. } if grant.issued_unix_ms == 3)
        );
        assert!(matches!(&pending.grants["d"], Net::RemoveIf(times) if times == &[4, 5]));
    }
}
