//! One worker's part of a spool directory: the files it writes (its journal, its spool, its
//! dead letters), the file it replays, and the bookkeeping that says when a file may go.
//!
//! A file is removed only once every record in it is *resolved*: acknowledged by the broker,
//! or copied into a spool or dead-letter file of this worker. Removals, and the periodic
//! `fsync`, run on a thread of ours (`Syncer`) that touches nothing but these files; a
//! removal that depends on records copied into the spool syncs the spool first.
//!
//! Everything else runs on the worker's thread: appends are one `write(2)` each, so that an
//! event answered after its append survives the process's death (the kernel has it).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::files::{self, Kind, Locked, Name};
use super::format::{self, Item, Record};

/// What `kafka_spool` configures, as the store needs it.
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: PathBuf,
    /// The directory's cap, shared by every process writing to it (each checks the total
    /// it saw at its last scan plus what it wrote since).
    pub max_size: u64,
    /// Whether files are synced to storage (`fsync` not `off`).
    pub fsync: bool,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the spool directory has reached its max_size")]
    Cap,
    #[error("no space left on the spool's device")]
    NoSpace,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What the store did, for the metrics and the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub journaled: u64,
    pub spooled: u64,
    pub dead: u64,
    /// Appends refused: the cap, a full disk or an error.
    pub refused: u64,
    /// Records handed out for replay.
    pub replayed: u64,
    /// Damaged regions and torn tails found in files being replayed.
    pub corrupt: u64,
    pub torn: u64,
    pub adopted: u64,
    pub removed: u64,
    /// Syncs sent to the syncer thread.
    pub syncs: u64,
}

/// A file of this process: one being written, replayed, or waiting for its records to be
/// resolved.
struct Segment {
    name: Name,
    path: PathBuf,
    file: Option<Locked>,
    /// Records appended (written files) or handed out (the replayed file).
    issued: u64,
    resolved: u64,
    /// No more records will be issued: the file goes once all are resolved.
    sealed: bool,
    bytes: u64,
    /// Records of this file were copied to the spool: sync the spool before removing it.
    copied: bool,
    /// A journal written through a shared mapping of its preallocated blocks: an append is
    /// a copy into the page cache, without a system call.
    map: Option<Mapping>,
}

/// A shared, writable mapping of a file's first `len` bytes, whose blocks are allocated
/// (`posix_fallocate`): writing to it cannot fail for want of space.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(file: &File, len: usize) -> io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: a file of ours; reserves its blocks, so that the mapping never faults
        // for want of space (SIGBUS).
        let rc = unsafe { libc::posix_fallocate(fd, 0, len as libc::off_t) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: a shared mapping of the file's `len` allocated bytes, unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn write(&mut self, at: u64, bytes: &[u8]) {
        let at = at as usize;
        assert!(at + bytes.len() <= self.len, "a write within the mapping");
        // SAFETY: within the mapping (checked above); nothing else writes to it.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(at), bytes.len()) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The file being replayed: its bytes and where its good records are.
struct Replaying {
    id: u32,
    data: Vec<u8>,
    offsets: Vec<usize>,
    next: usize,
}

pub struct Store {
    settings: Settings,
    host: String,
    pid: u32,
    start_ms: u64,
    next_id: u32,
    segment_max: u64,
    segments: HashMap<u32, Segment>,
    journal: Option<u32>,
    spool: Option<u32>,
    dead: Option<Locked>,
    /// This process's sealed spool files, oldest first, waiting for replay.
    waiting: Vec<u32>,
    replaying: Option<Replaying>,
    /// Other processes' files seen at the last scan, oldest first.
    candidates: Vec<Name>,
    /// Files written since the last sync.
    dirty: Vec<u32>,
    dir_bytes: u64,
    buf: Vec<u8>,
    syncer: Syncer,
    pub counts: Counts,
}

/// The largest file this store writes before it starts another.
const SEGMENT_MAX: u64 = 64 << 20;
const SEGMENT_MIN: u64 = 1 << 20;
/// Journals are kept small: a journal left by a worker that died is replayed whole, and
/// what it holds that was delivered already comes twice.
const JOURNAL_MAX: u64 = 1 << 20;
/// Journals are preallocated (and mapped) only under a cap this large: every live worker's
/// reservation counts against it.
const MAP_MIN_CAP: u64 = 64 << 20;

impl Store {
    pub fn new(settings: Settings, pid: u32) -> Store {
        let segment_max = (settings.max_size / 8).clamp(SEGMENT_MIN, SEGMENT_MAX);
        Store {
            host: files::host_label(),
            pid,
            start_ms: files::now_ms(),
            next_id: 1,
            segment_max,
            segments: HashMap::new(),
            journal: None,
            spool: None,
            dead: None,
            waiting: Vec::new(),
            replaying: None,
            candidates: Vec::new(),
            dirty: Vec::new(),
            dir_bytes: 0,
            buf: Vec::with_capacity(4096),
            syncer: Syncer::start(),
            counts: Counts::default(),
            settings,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    /// Bytes in the directory: at the last scan, plus what this process wrote since.
    pub fn dir_bytes(&self) -> u64 {
        self.dir_bytes
    }

    /// This process's files that hold records not yet resolved.
    pub fn files(&self) -> usize {
        self.segments.len()
    }

    /// Appends a record to this process's journal (`Kind::Journal`) or spool; returns the
    /// id to resolve it by (a journal record, once acknowledged or moved to the spool).
    pub fn append(&mut self, kind: Kind, record: &Record<'_>) -> Result<u32, AppendError> {
        debug_assert!(kind != Kind::Dead);
        self.buf.clear();
        record.encode(&mut self.buf);
        let len = self.buf.len() as u64;
        if self.dir_bytes + len > self.settings.max_size {
            // A journal whose records are all resolved holds nothing: it goes, and makes
            // room.
            self.close_resolved_journal();
        }
        if self.dir_bytes + len > self.settings.max_size {
            self.counts.refused += 1;
            return Err(AppendError::Cap);
        }
        let id = match self.active(kind, len) {
            Ok(id) => id,
            Err(e) => {
                self.counts.refused += 1;
                return Err(e);
            }
        };
        let seg = self.segments.get_mut(&id).expect("the active file");
        match seg.map.as_mut() {
            Some(map) if seg.bytes + len <= map.len as u64 => map.write(seg.bytes, &self.buf),
            // Past a mapping (a record larger than a journal), or without one: a positional
            // write at the end of what was written.
            map => {
                let mapped = map.is_some();
                let file = &seg.file.as_ref().expect("an open file").file;
                if let Err(e) = file.write_all_at(&self.buf, seg.bytes) {
                    // Never leave half a record at the end (a mapped file keeps its length:
                    // the next append overwrites it).
                    if !mapped {
                        let _ = file.set_len(seg.bytes);
                    }
                    self.counts.refused += 1;
                    return Err(classify(e));
                }
            }
        }
        seg.bytes += len;
        seg.issued += 1;
        self.dir_bytes += len;
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
        match kind {
            Kind::Journal => self.counts.journaled += 1,
            _ => self.counts.spooled += 1,
        }
        Ok(id)
    }

    /// Appends a record that can never be delivered to this process's dead-letter file.
    pub fn append_dead(&mut self, record: &Record<'_>) -> Result<(), AppendError> {
        self.buf.clear();
        record.encode(&mut self.buf);
        if self.dead.is_none() {
            let id = self.take_id();
            let name = self.name(id, Kind::Dead);
            self.dead = Some(files::create(&self.settings.dir, &name).map_err(classify)?);
            self.dir_bytes += format::FILE_HEADER_LEN as u64;
        }
        let locked = self.dead.as_mut().expect("the dead-letter file");
        let at = locked.file.seek(SeekFrom::End(0)).map_err(classify)?;
        if let Err(e) = locked.file.write_all(&self.buf) {
            let _ = locked.file.set_len(at);
            return Err(classify(e));
        }
        self.dir_bytes += self.buf.len() as u64;
        self.counts.dead += 1;
        Ok(())
    }

    /// Notes that the record `id` was issued for is resolved; its file goes once all are.
    /// `copied`: it was resolved by being copied into the spool.
    pub fn resolve(&mut self, id: u32, copied: bool) {
        let Some(seg) = self.segments.get_mut(&id) else {
            return;
        };
        seg.resolved += 1;
        seg.copied |= copied;
        if seg.sealed && seg.resolved >= seg.issued {
            self.remove(id);
        }
    }

    /// Seals the journal being written if every record in it is resolved (it is then
    /// removed): an idle journal does not hold its bytes against the cap.
    fn close_resolved_journal(&mut self) {
        let done = self
            .journal
            .and_then(|id| self.segments.get(&id))
            .is_some_and(|s| s.issued > 0 && s.resolved >= s.issued);
        if let (true, Some(id)) = (done, self.journal) {
            self.seal(id);
        }
    }

    /// The file written for `kind`, started anew when there is none or it is full.
    fn active(&mut self, kind: Kind, len: u64) -> Result<u32, AppendError> {
        let slot = match kind {
            Kind::Journal => self.journal,
            _ => self.spool,
        };
        if let Some(id) = slot {
            let max = match kind {
                Kind::Journal => self.segment_max.min(JOURNAL_MAX),
                _ => self.segment_max,
            };
            if self.segments[&id].bytes + len <= max {
                return Ok(id);
            }
            self.seal(id);
        }
        let id = self.take_id();
        let name = self.name(id, kind);
        let locked = files::create(&self.settings.dir, &name).map_err(classify)?;
        self.dir_bytes += format::FILE_HEADER_LEN as u64;
        // A journal is written through a mapping where the file system can allocate its
        // blocks up front (not NFS before 4.2, for one): elsewhere with write(2).
        let map = match kind {
            Kind::Journal if self.settings.max_size >= MAP_MIN_CAP => {
                match Mapping::new(&locked.file, JOURNAL_MAX as usize) {
                    Ok(map) => Some(map),
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) =>
                    {
                        self.syncer.send(Job::Remove {
                            sync: Vec::new(),
                            path: locked.path.clone(),
                            locked: Some(locked),
                        });
                        return Err(AppendError::NoSpace);
                    }
                    Err(_) => None,
                }
            }
            _ => None,
        };
        self.segments.insert(
            id,
            Segment {
                path: locked.path.clone(),
                name,
                file: Some(locked),
                issued: 0,
                resolved: 0,
                sealed: false,
                bytes: format::FILE_HEADER_LEN as u64,
                copied: false,
                map,
            },
        );
        match kind {
            Kind::Journal => self.journal = Some(id),
            _ => self.spool = Some(id),
        }
        Ok(id)
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn name(&self, seq: u32, kind: Kind) -> Name {
        Name {
            host: self.host.clone(),
            pid: self.pid,
            start_ms: self.start_ms,
            seq,
            kind,
        }
    }

    /// No more appends to file `id`: a journal goes once its records are resolved; a spool
    /// file waits for replay.
    fn seal(&mut self, id: u32) {
        if self.journal == Some(id) {
            self.journal = None;
        }
        if self.spool == Some(id) {
            self.spool = None;
            self.waiting.push(id);
        }
        let Some(seg) = self.segments.get_mut(&id) else {
            return;
        };
        unmap(seg);
        if seg.name.kind == Kind::Journal {
            seg.sealed = true;
            if seg.resolved >= seg.issued {
                self.remove(id);
            }
        }
    }

    /// Removes file `id` (on the syncer's thread, after the spool it was copied to is
    /// synced), then releases its lock.
    fn remove(&mut self, id: u32) {
        let Some(mut seg) = self.segments.remove(&id) else {
            return;
        };
        self.dirty.retain(|d| *d != id);
        if self.replaying.as_ref().is_some_and(|r| r.id == id) {
            self.replaying = None;
        }
        // Its records copied to spool files must be on storage before it goes.
        let mut sync = Vec::new();
        if seg.copied && self.settings.fsync {
            sync = self
                .segments
                .values()
                .filter(|s| s.name.kind == Kind::Spool)
                .filter_map(|s| s.file.as_ref()?.file.try_clone().ok())
                .collect();
        }
        self.dir_bytes = self.dir_bytes.saturating_sub(seg.bytes);
        self.counts.removed += 1;
        self.syncer.send(Job::Remove {
            sync,
            path: seg.path.clone(),
            locked: seg.file.take(),
        });
    }

    /// Syncs the files written since the last call (on the syncer's thread).
    pub fn sync(&mut self) {
        if !self.settings.fsync || self.dirty.is_empty() {
            self.dirty.clear();
            return;
        }
        let files = self.dirty_files();
        self.counts.syncs += 1;
        self.syncer.send(Job::Sync(files, None));
    }

    /// Syncs the files written since the last call, like `sync`, then tells `done`: every
    /// record appended before this call is on storage (`Committed::ok`), or a sync failed.
    pub fn commit(&mut self, done: Done) {
        let files = self.dirty_files();
        self.counts.syncs += 1;
        self.syncer.send(Job::Sync(files, Some(done)));
    }

    fn dirty_files(&mut self) -> Vec<File> {
        self.dirty
            .drain(..)
            .filter_map(|id| self.segments.get(&id))
            .filter_map(|s| s.file.as_ref()?.file.try_clone().ok())
            .collect()
    }

    /// Whether records were appended since the last sync.
    pub fn dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Lists the directory: its size, and other processes' files that may need adopting.
    pub fn scan(&mut self) -> io::Result<()> {
        self.close_resolved_journal();
        let list = files::list(&self.settings.dir)?;
        // This process's mapped journals are counted by what is written, not reserved.
        let reserved: u64 = self
            .segments
            .values()
            .filter_map(|s| Some(s.map.as_ref()?.len as u64 - s.bytes))
            .sum();
        self.dir_bytes = list
            .iter()
            .map(|(_, size)| size)
            .sum::<u64>()
            .saturating_sub(reserved);
        self.candidates = list
            .into_iter()
            .map(|(name, _)| name)
            .filter(|n| n.kind != Kind::Dead && !self.is_mine(n))
            .collect();
        Ok(())
    }

    fn is_mine(&self, name: &Name) -> bool {
        name.host == self.host && name.pid == self.pid && name.start_ms == self.start_ms
    }

    /// Whether anything waits for replay: this process's spool, or others' files.
    pub fn replay_pending(&self) -> bool {
        self.replaying.is_some()
            || !self.waiting.is_empty()
            || !self.candidates.is_empty()
            || self
                .spool
                .is_some_and(|id| self.segments.get(&id).is_some_and(|s| s.issued > 0))
    }

    /// Hands out up to `max` records for replay, oldest file first, each with the id that
    /// resolves it. `produce` returns false when it cannot take the record now; it is
    /// offered again on the next call.
    pub fn replay(
        &mut self,
        max: usize,
        mut produce: impl FnMut(&Record<'_>, u32) -> bool,
    ) -> usize {
        let mut handed = 0;
        while handed < max {
            if self.replaying.is_none() {
                // Nothing open: open the next file (false: none left), or try another.
                if !self.open_next() {
                    break;
                }
                continue;
            }
            let Some(r) = self.replaying.as_mut() else {
                break;
            };
            let Some(&offset) = r.offsets.get(r.next) else {
                // Every record was handed out: the file goes once they are resolved.
                let id = r.id;
                self.replaying = None;
                if let Some(seg) = self.segments.get_mut(&id) {
                    seg.sealed = true;
                    if seg.resolved >= seg.issued {
                        self.remove(id);
                    }
                }
                continue;
            };
            let Some(record) = record_at(&r.data, offset) else {
                r.next += 1;
                continue;
            };
            if !produce(&record, r.id) {
                break;
            }
            r.next += 1;
            handed += 1;
            self.counts.replayed += 1;
            if let Some(seg) = self.segments.get_mut(&r.id) {
                seg.issued += 1;
            }
        }
        handed
    }

    /// Starts replaying the oldest file waiting: this process's, or one adopted.
    fn open_next(&mut self) -> bool {
        // This process's current spool file, once nothing older waits.
        if self.waiting.is_empty() && self.candidates.is_empty() {
            match self.spool {
                Some(id) if self.segments[&id].issued > 0 => self.seal(id),
                _ => return false,
            }
        }
        let own = self
            .waiting
            .first()
            .map(|id| self.segments[id].name.age_key());
        let other = self.candidates.first().map(Name::age_key);
        let adopt = match (own, other) {
            (Some(o), Some(c)) => c < o,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if adopt {
            let name = self.candidates.remove(0);
            self.adopt(name);
            return self.replaying.is_some()
                || !self.candidates.is_empty()
                || !self.waiting.is_empty();
        }
        let Some(id) = (!self.waiting.is_empty()).then(|| self.waiting.remove(0)) else {
            return false;
        };
        let path = self.segments[&id].path.clone();
        let read = self
            .segments
            .get_mut(&id)
            .and_then(|s| s.file.as_mut())
            .map(|l| read_all(&mut l.file));
        match read {
            Some(Ok(data)) => self.start_replay(id, data),
            _ => {
                // Unreadable: left in place (and locked) for the tool; not replayed twice.
                let _ = path;
            }
        }
        true
    }

    /// Takes another process's file over, if no one holds it.
    fn adopt(&mut self, name: Name) {
        let path = self.settings.dir.join(name.file_name());
        let Ok(Some(mut locked)) = files::try_lock(&path) else {
            return;
        };
        let Ok(data) = read_all(&mut locked.file) else {
            return;
        };
        if data.len() <= format::FILE_HEADER_LEN && format::check_file_header(&data).is_err() {
            // Created just before a crash, its header never reached the disk: it holds
            // nothing.
            let _ = std::fs::remove_file(&path);
            return;
        }
        if format::check_file_header(&data).is_err() {
            // A version this build does not know: left for a newer one (or the tool).
            return;
        }
        self.counts.adopted += 1;
        let id = self.take_id();
        let bytes = data.len() as u64;
        self.segments.insert(
            id,
            Segment {
                name,
                path,
                file: Some(locked),
                issued: 0,
                resolved: 0,
                sealed: false,
                bytes,
                copied: false,
                map: None,
            },
        );
        self.start_replay(id, data);
    }

    fn start_replay(&mut self, id: u32, data: Vec<u8>) {
        // From now on the file counts what replay hands out, not what was written to it.
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.issued = 0;
            seg.resolved = 0;
        }
        let mut offsets = Vec::new();
        if format::check_file_header(&data).is_ok() {
            for item in format::scan(&data) {
                match item {
                    Item::Record { offset, .. } => offsets.push(offset),
                    Item::Corrupt { .. } => self.counts.corrupt += 1,
                    Item::Torn { .. } => self.counts.torn += 1,
                }
            }
        }
        self.replaying = Some(Replaying {
            id,
            data,
            offsets,
            next: 0,
        });
    }

    /// When the process ends: what was not handed out of the file being replayed is copied
    /// to the spool, so that the file can go; files are synced, then closed.
    pub fn close(&mut self) {
        if let Some(r) = self.replaying.take() {
            let id = r.id;
            let mut copied = 0u64;
            for &offset in &r.offsets[r.next..] {
                let Some(mut record) = record_at(&r.data, offset) else {
                    continue;
                };
                record.flags |= format::FLAG_REPLAYED;
                if self.append(Kind::Spool, &record).is_err() {
                    // The file stays, and is adopted whole later: duplicates, not losses.
                    copied = u64::MAX;
                    break;
                }
                copied += 1;
            }
            if copied != u64::MAX {
                if let Some(seg) = self.segments.get_mut(&id) {
                    seg.issued += copied;
                    seg.resolved += copied;
                    seg.copied |= copied > 0;
                    seg.sealed = true;
                    if seg.resolved >= seg.issued {
                        self.remove(id);
                    }
                }
            }
        }
        if let Some(id) = self.journal {
            self.seal(id);
        }
        self.sync();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for seg in self.segments.values_mut() {
            unmap(seg);
        }
        self.syncer.stop();
    }
}

/// Ends a journal's mapping, and cuts the file to what was written.
fn unmap(seg: &mut Segment) {
    if seg.map.take().is_some() {
        if let Some(l) = seg.file.as_ref() {
            let _ = l.file.set_len(seg.bytes);
        }
    }
}

/// The good record at `offset` of a file's bytes.
fn record_at(data: &[u8], offset: usize) -> Option<Record<'_>> {
    format::record_at(data, offset).map(|(_, record)| record)
}

fn read_all(file: &mut File) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut data)?;
    file.seek(SeekFrom::End(0))?;
    Ok(data)
}

fn classify(e: io::Error) -> AppendError {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => AppendError::NoSpace,
        _ => AppendError::Io(e),
    }
}

/// Where a commit (`Store::commit`) is reported: its batch number and whether every sync
/// succeeded go to `tx`, then `signal` (an eventfd) is written, waking the worker.
pub struct Done {
    pub batch: u64,
    pub tx: mpsc::Sender<Committed>,
    pub signal: std::sync::Arc<std::os::fd::OwnedFd>,
}

/// A finished commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub batch: u64,
    pub ok: bool,
}

impl Done {
    fn report(self, ok: bool) {
        use std::os::fd::AsRawFd;
        let _ = self.tx.send(Committed {
            batch: self.batch,
            ok,
        });
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes to an eventfd that `signal` keeps open.
        unsafe { libc::write(self.signal.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

enum Job {
    Sync(Vec<File>, Option<Done>),
    Remove {
        sync: Vec<File>,
        path: PathBuf,
        locked: Option<Locked>,
    },
}

/// The thread that syncs and removes files, so that the worker never waits for storage.
struct Syncer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start() -> Syncer {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("kafka-spool".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Sync(files, done) => sync(files, done),
                        Job::Remove { sync, path, locked } => {
                            for f in sync {
                                let _ = f.sync_data();
                            }
                            let _ = std::fs::remove_file(&path);
                            // The lock goes with the file, after it is gone.
                            drop(locked);
                        }
                    }
                }
            })
            .ok();
        Syncer {
            tx: thread.as_ref().map(|_| tx),
            thread,
        }
    }

    fn send(&self, job: Job) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    run_now(job);
                }
            }
            None => run_now(job),
        }
    }

    /// Finishes what was sent, then ends the thread.
    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Syncs `files` (the data, and the size where it changed), then reports to `done`.
fn sync(files: Vec<File>, done: Option<Done>) {
    // Every file is synced, even after one failed.
    let failed = files.iter().filter(|f| f.sync_data().is_err()).count();
    let ok = failed == 0;
    if let Some(done) = done {
        done.report(ok);
    }
}

/// Without a thread (it could not start): the job runs on the caller's thread.
fn run_now(job: Job) {
    match job {
        Job::Sync(files, done) => sync(files, done),
        Job::Remove { sync, path, locked } => {
            sync.iter().for_each(|f| drop(f.sync_data()));
            let _ = std::fs::remove_file(path);
            drop(locked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn store(d: &Path, pid: u32) -> Store {
        Store::new(
            Settings {
                dir: d.to_path_buf(),
                max_size: 1 << 30,
                fsync: true,
            },
            pid,
        )
    }

    fn record(value: &[u8]) -> Record<'_> {
        Record {
            flags: 0,
            timestamp_ms: 1,
            reason: b"",
            topic: b"t",
            key: Some(b"k"),
            headers: vec![(b"id", Some(value))],
            value,
        }
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Hands out everything replay has now, resolving each as delivered.
    fn replay_all(s: &mut Store) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut ids = Vec::new();
        while s.replay(100, |r, id| {
            got.push(r.value.to_vec());
            ids.push(id);
            true
        }) > 0
        {}
        for id in ids {
            s.resolve(id, false);
        }
        s.replay(100, |_, _| true);
        got
    }

    #[test]
    fn a_commit_reports_its_batch_after_the_sync_and_signals() {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let d = dir("commit");
        let mut s = store(&d, 1);
        // SAFETY: a new eventfd, owned by `signal`.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        let signal = std::sync::Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = mpsc::channel();
        s.append(Kind::Journal, &record(b"a")).unwrap();
        assert!(s.dirty());
        s.commit(Done {
            batch: 7,
            tx: tx.clone(),
            signal: signal.clone(),
        });
        assert!(!s.dirty(), "the commit takes what was written");
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(got, Committed { batch: 7, ok: true });
        let mut n = [0u8; 8];
        // SAFETY: reads the eventfd's counter (blocking: it was written).
        assert_eq!(
            unsafe { libc::read(signal.as_raw_fd(), n.as_mut_ptr().cast(), 8) },
            8
        );
        assert_eq!(u64::from_ne_bytes(n), 1);
        // Nothing written since: a commit still reports (requests may wait on it).
        s.commit(Done {
            batch: 8,
            tx,
            signal,
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(got, Committed { batch: 8, ok: true });
        assert_eq!(s.counts.syncs, 2);
        s.close();
    }

    #[test]
    fn a_journal_goes_once_its_records_are_resolved() {
        let d = dir("journal");
        let mut s = store(&d, 1);
        let ids: Vec<u32> = (0..3)
            .map(|i| s.append(Kind::Journal, &record(&[b'a' + i])).unwrap())
            .collect();
        assert_eq!(names(&d).len(), 1);
        for id in &ids[..2] {
            s.resolve(*id, false);
        }
        s.close();
        assert_eq!(names(&d).len(), 1, "one record is not resolved yet");
        s.resolve(ids[2], false);
        drop(s);
        assert!(names(&d).is_empty(), "{:?}", names(&d));
    }

    #[test]
    fn a_spool_file_goes_once_replayed_and_acknowledged() {
        let d = dir("spool");
        let mut s = store(&d, 1);
        s.append(Kind::Spool, &record(b"one")).unwrap();
        s.append(Kind::Spool, &record(b"two")).unwrap();
        assert!(s.replay_pending());
        assert_eq!(replay_all(&mut s), vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(!s.replay_pending());
        drop(s);
        assert!(names(&d).is_empty(), "{:?}", names(&d));
    }

    #[test]
    fn files_of_a_process_that_ended_are_adopted_once() {
        let d = dir("adopt");
        let mut a = store(&d, 1);
        a.append(Kind::Spool, &record(b"from-a")).unwrap();
        a.append(Kind::Journal, &record(b"journal-a")).unwrap();
        let mut b = store(&d, 2);
        b.scan().unwrap();
        // A holds its files: B cannot take them.
        assert!(replay_all(&mut b).is_empty());
        drop(a);
        b.scan().unwrap();
        let mut got = replay_all(&mut b);
        got.sort();
        assert_eq!(got, vec![b"from-a".to_vec(), b"journal-a".to_vec()]);
        assert_eq!(b.counts.adopted, 2);
        drop(b);
        assert!(names(&d).is_empty(), "{:?}", names(&d));
    }

    #[test]
    fn a_journal_left_mapped_by_a_crash_is_replayed() {
        let d = dir("crash");
        let mut a = store(&d, 1);
        a.append(Kind::Journal, &record(b"j1")).unwrap();
        a.append(Kind::Journal, &record(b"j2")).unwrap();
        // What a worker killed now leaves: the preallocated file, zeros after the records.
        let name = names(&d).pop().unwrap();
        let bytes = std::fs::read(d.join(&name)).unwrap();
        assert_eq!(bytes.len() as u64, JOURNAL_MAX);
        let crashed = name.replacen(".1.", ".7.", 1);
        std::fs::write(d.join(&crashed), &bytes).unwrap();
        let mut b = store(&d, 2);
        b.scan().unwrap();
        b.candidates.retain(|n| n.pid == 7);
        assert_eq!(replay_all(&mut b), vec![b"j1".to_vec(), b"j2".to_vec()]);
        assert_eq!(b.counts.torn, 1);
        drop(b);
        drop(a);
        assert!(
            names(&d).iter().all(|n| !n.contains(".7.")),
            "{:?}",
            names(&d)
        );
    }

    #[test]
    fn a_record_larger_than_a_journal_is_written() {
        let d = dir("large");
        let mut s = store(&d, 1);
        let big = vec![b'b'; JOURNAL_MAX as usize + 10];
        s.append(Kind::Journal, &record(b"small")).unwrap();
        s.append(Kind::Journal, &record(&big)).unwrap();
        s.append(Kind::Journal, &record(b"after")).unwrap();
        s.close();
        drop(s);
        let mut b = store(&d, 2);
        b.scan().unwrap();
        let got = replay_all(&mut b);
        assert_eq!(got, vec![b"small".to_vec(), big, b"after".to_vec()]);
    }

    #[test]
    fn what_replay_did_not_hand_out_is_kept_at_close() {
        let d = dir("close");
        let mut a = store(&d, 1);
        for v in [&b"x1"[..], b"x2", b"x3"] {
            a.append(Kind::Spool, &record(v)).unwrap();
        }
        let mut ids = Vec::new();
        a.replay(1, |_, id| {
            ids.push(id);
            true
        });
        a.resolve(ids[0], false);
        a.close();
        drop(a);
        let mut b = store(&d, 2);
        b.scan().unwrap();
        assert_eq!(replay_all(&mut b), vec![b"x2".to_vec(), b"x3".to_vec()]);
        drop(b);
        assert!(names(&d).is_empty(), "{:?}", names(&d));
    }

    #[test]
    fn the_cap_refuses_and_counts() {
        let d = dir("cap");
        let mut s = Store::new(
            Settings {
                dir: d.clone(),
                max_size: 200,
                fsync: false,
            },
            1,
        );
        let mut refused = 0;
        for i in 0..10u8 {
            if let Err(AppendError::Cap) = s.append(Kind::Spool, &record(&[i; 20])) {
                refused += 1;
            }
        }
        assert!(refused > 0 && refused < 10, "{refused}");
        assert_eq!(s.counts.refused, refused);
    }
}
