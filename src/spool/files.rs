//! Spool file names, listing and locks (docs/spool-format.md, "Files" and "Locks").
//!
//! A file is held under an exclusive open file description lock (`F_OFD_SETLK`) by whoever
//! writes or replays it: it belongs to the open file description, not the process, so two
//! opens conflict even within one process, and it goes away with the last descriptor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::format;

/// The longest host label in a file name.
const HOST_MAX: usize = 64;
/// Digits of `seq` in a file name (more once it passes 99,999,999).
const SEQ_DIGITS: usize = 8;

/// What a file holds; its name's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Write-ahead records of `durable` locations.
    Journal,
    /// Events waiting for replay.
    Spool,
    /// Records that can never be delivered; never replayed by nginx.
    Dead,
}

impl Kind {
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Journal => "journal",
            Kind::Spool => "spool",
            Kind::Dead => "dead",
        }
    }

    fn from_extension(ext: &str) -> Option<Kind> {
        match ext {
            "journal" => Some(Kind::Journal),
            "spool" => Some(Kind::Spool),
            "dead" => Some(Kind::Dead),
            _ => None,
        }
    }
}

/// A spool file's name: `<host>.<pid>.<start_ms>.<seq>.<kind>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    pub host: String,
    pub pid: u32,
    pub start_ms: u64,
    pub seq: u32,
    pub kind: Kind,
}

impl Name {
    /// The name in `file_name`, if it is one this version writes exactly (`file_name` of the
    /// result gives it back); anything else (`.tmp` files, leading zeros, signs, other
    /// extensions) is not a spool file.
    pub fn parse(file_name: &str) -> Option<Name> {
        let mut parts = file_name.split('.');
        let host = parts.next()?;
        let pid = digits(parts.next()?)?;
        let start_ms = digits(parts.next()?)?;
        let seq = parts.next()?;
        let kind = Kind::from_extension(parts.next()?)?;
        if parts.next().is_some()
            || host.is_empty()
            || host.len() > HOST_MAX
            || !host.bytes().all(is_host_byte)
            || seq.len() < SEQ_DIGITS
        {
            return None;
        }
        let name = Name {
            host: host.to_string(),
            pid,
            start_ms,
            seq: digits(seq)?,
            kind,
        };
        // Only the canonical spelling: one file, one name.
        (name.file_name() == file_name).then_some(name)
    }

    pub fn file_name(&self) -> String {
        format!(
            "{}.{}.{}.{:0width$}.{}",
            self.host,
            self.pid,
            self.start_ms,
            self.seq,
            self.kind.extension(),
            width = SEQ_DIGITS
        )
    }

    /// Sorts oldest first: by `start_ms`, then `pid`, then `seq`, then host.
    pub fn age_key(&self) -> (u64, u32, u32, String) {
        (self.start_ms, self.pid, self.seq, self.host.clone())
    }
}

/// Decimal digits only (`str::parse` would also take a sign).
fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// This host's name as file names carry it: at most 64 bytes of `[A-Za-z0-9_-]`, any other
/// byte as `_`; `unknown` if the system has none.
pub fn host_label() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes, and gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let raw = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        &buf[..end]
    } else {
        &[][..]
    };
    sanitize_host(raw)
}

fn sanitize_host(raw: &[u8]) -> String {
    if raw.is_empty() {
        return "unknown".to_string();
    }
    raw.iter()
        .take(HOST_MAX)
        .map(|&b| if is_host_byte(b) { char::from(b) } else { '_' })
        .collect()
}

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Spool files of `dir` (dot-files and unknown names skipped), oldest first, with their sizes.
pub fn list(dir: &Path) -> io::Result<Vec<(Name, u64)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().and_then(Name::parse) else {
            continue;
        };
        match entry.metadata() {
            Ok(meta) if meta.is_file() => files.push((name, meta.len())),
            Ok(_) => {}
            // Removed since the directory was read: its owner finished with it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    files.sort_by_key(|(name, _)| (name.age_key(), name.kind));
    Ok(files)
}

/// An open file held under an exclusive OFD lock (released when dropped / closed).
#[derive(Debug)]
pub struct Locked {
    pub file: File,
    pub path: PathBuf,
}

/// Tries to take `path` over: opens it read-write, takes an `F_OFD_SETLK` write lock on the
/// whole file without waiting, then checks the path still names this file (stat vs fstat
/// dev/ino, nlink > 0). `Ok(None)` when another holds it or it was removed or replaced.
pub fn try_lock(path: &Path) -> io::Result<Option<Locked>> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    take(file, path)
}

/// Locks an open `file` and checks that `path` still names it.
fn take(file: File, path: &Path) -> io::Result<Option<Locked>> {
    if !lock(&file)? || !still_named(&file, path)? {
        return Ok(None);
    }
    Ok(Some(Locked {
        file,
        path: path.to_path_buf(),
    }))
}

/// An exclusive OFD lock on the whole file, without waiting; `false` when another holds one.
fn lock(file: &File) -> io::Result<bool> {
    // SAFETY: `flock` is a plain C struct; all zeros is a valid value (and `l_pid` must be 0
    // for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0; // to the end of the file, however long it grows
                    // SAFETY: the descriptor is open for as long as `file` lives, and `lock` is a valid
                    // `flock` that fcntl only reads.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Whether `path` still names the open `file`: its owner may have removed or replaced it
/// between our open and our lock.
fn still_named(file: &File, path: &Path) -> io::Result<bool> {
    let held = file.metadata()?;
    if held.nlink() == 0 {
        return Ok(false);
    }
    match fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `dir/name` for writing: creates `.<name>.tmp` with `O_EXCL` (mode 0640), locks
/// it, writes `format::file_header()`, renames it to the final name, and returns it locked,
/// positioned at the end. A running reader never sees the final name without the header;
/// after a machine crash the header may be lost with the page cache (the file then holds
/// nothing, and `Store::adopt` removes it). Fails with `AlreadyExists` if the name is taken.
pub fn create(dir: &Path, name: &Name) -> io::Result<Locked> {
    let file_name = name.file_name();
    let path = dir.join(&file_name);
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&tmp)?;
    let mut finish = || -> io::Result<()> {
        if !lock(&file)? {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{}: locked by another process", tmp.display()),
            ));
        }
        // Not synced here (this runs on the worker's thread): the periodic sync covers it,
        // and a reader removes a file a crash left without its header (`Store::adopt`).
        file.write_all(&format::file_header())?;
        // Names carry the pid and the worker's start time, so this only catches a bug; a
        // rename would replace the other file.
        if fs::symlink_metadata(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: already exists", path.display()),
            ));
        }
        fs::rename(&tmp, &path)
    };
    if let Err(e) = finish() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Locked { file, path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system's temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "nginx-kafka-spool-files-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn name(host: &str, pid: u32, start_ms: u64, seq: u32, kind: Kind) -> Name {
        Name {
            host: host.to_string(),
            pid,
            start_ms,
            seq,
            kind,
        }
    }

    #[test]
    fn names_round_trip() {
        let n = name("pod-7_a", 4242, 1_764_000_000_123, 1, Kind::Journal);
        assert_eq!(n.file_name(), "pod-7_a.4242.1764000000123.00000001.journal");
        assert_eq!(Name::parse(&n.file_name()), Some(n));
        for kind in [Kind::Journal, Kind::Spool, Kind::Dead] {
            let n = name("h", 0, 0, 123_456_789, kind);
            assert_eq!(Name::parse(&n.file_name()), Some(n));
        }
        let long = "a".repeat(64);
        let n = name(&long, u32::MAX, u64::MAX, u32::MAX, Kind::Spool);
        assert_eq!(Name::parse(&n.file_name()), Some(n));
    }

    #[test]
    fn foreign_names_are_refused() {
        for bad in [
            "",
            ".h.1.2.00000001.spool.tmp",
            ".h.1.2.00000001.spool",
            "h.1.2.00000001.spool.tmp",
            "h.1.2.00000001.log",
            "h.1.2.00000001",
            "h.1.2.1.spool",
            "h.1.2.0000001.spool",
            "h.01.2.00000001.spool",
            "h.+1.2.00000001.spool",
            "h.-1.2.00000001.spool",
            "h.1.+2.00000001.spool",
            "h.1.2.+0000001.spool",
            "h.1.2.000000001.spool",
            "h.4294967296.2.00000001.spool",
            "h.1.2.4294967296.spool",
            ".1.2.00000001.spool",
            "h.x.2.00000001.spool",
            "h h.1.2.00000001.spool",
            "hé.1.2.00000001.spool",
            "h.1.2.00000001.Spool",
            &format!("{}.1.2.00000001.spool", "a".repeat(65)),
        ] {
            assert_eq!(Name::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn oldest_first() {
        let mut names = [
            name("b", 1, 200, 1, Kind::Spool),
            name("a", 2, 100, 2, Kind::Spool),
            name("a", 2, 100, 1, Kind::Spool),
            name("z", 1, 100, 9, Kind::Spool),
            name("a", 1, 100, 9, Kind::Spool),
            name("b", 1, 100, 9, Kind::Spool),
        ];
        names.sort_by_key(Name::age_key);
        let order: Vec<String> = names.iter().map(Name::file_name).collect();
        assert_eq!(
            order,
            [
                "a.1.100.00000009.spool",
                "b.1.100.00000009.spool",
                "z.1.100.00000009.spool",
                "a.2.100.00000001.spool",
                "a.2.100.00000002.spool",
                "b.1.200.00000001.spool",
            ]
        );
    }

    #[test]
    fn host_labels() {
        assert_eq!(sanitize_host(b"web-1.example.com"), "web-1_example_com");
        assert_eq!(sanitize_host(b""), "unknown");
        assert_eq!(sanitize_host(b"h\xc3\xa9 x"), "h___x");
        assert_eq!(sanitize_host(&[b'a'; 100]), "a".repeat(64));
        let label = host_label();
        assert!(!label.is_empty() && label.len() <= 64);
        assert!(label.bytes().all(is_host_byte));
        assert!(now_ms() > 1_600_000_000_000);
    }

    #[test]
    fn list_skips_what_is_not_a_spool_file() {
        let dir = TempDir::new();
        for file in [
            "b.1.100.00000001.spool",
            "a.1.50.00000002.dead",
            "a.1.50.00000001.journal",
            ".a.1.10.00000001.spool.tmp",
            "notes.txt",
            "a.1.10.1.spool",
        ] {
            fs::write(dir.0.join(file), file).unwrap();
        }
        fs::create_dir(dir.0.join("c.1.1.00000001.spool")).unwrap();
        let listed: Vec<(String, u64)> = list(&dir.0)
            .unwrap()
            .into_iter()
            .map(|(n, size)| (n.file_name(), size))
            .collect();
        assert_eq!(
            listed,
            [
                ("a.1.50.00000001.journal".to_string(), 23),
                ("a.1.50.00000002.dead".to_string(), 20),
                ("b.1.100.00000001.spool".to_string(), 22),
            ]
        );
    }

    #[test]
    fn one_lock_per_open_file_description() {
        let dir = TempDir::new();
        let path = dir.0.join("h.1.1.00000001.spool");
        fs::write(&path, format::file_header()).unwrap();
        let first = try_lock(&path).unwrap().expect("free file");
        assert!(try_lock(&path).unwrap().is_none(), "held by the first open");
        drop(first);
        let again = try_lock(&path).unwrap().expect("released when dropped");
        assert_eq!(again.path, path);
        assert!(try_lock(&dir.0.join("gone.1.1.00000001.spool"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_removed_or_replaced_file_is_not_taken() {
        let dir = TempDir::new();
        let path = dir.0.join("h.1.1.00000001.spool");
        fs::write(&path, format::file_header()).unwrap();

        // Its owner removed it between our open and our lock.
        let file = File::options().read(true).write(true).open(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert!(take(file, &path).unwrap().is_none());

        // Or put another file in its place.
        fs::write(&path, format::file_header()).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let other = dir.0.join("other");
        fs::write(&other, format::file_header()).unwrap();
        fs::rename(&other, &path).unwrap();
        assert!(take(file, &path).unwrap().is_none());
        assert!(try_lock(&path).unwrap().is_some());
    }

    #[test]
    fn create_shows_the_name_only_with_its_header() {
        let dir = TempDir::new();
        let n = name("h", 7, 1000, 1, Kind::Journal);
        let mut locked = create(&dir.0, &n).unwrap();
        assert_eq!(locked.path, dir.0.join(n.file_name()));
        assert_eq!(locked.file.stream_position().unwrap(), 16);
        assert_eq!(fs::read(&locked.path).unwrap(), format::file_header());
        assert!(try_lock(&locked.path).unwrap().is_none(), "created locked");
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(n.file_name())]);
        let mode = fs::metadata(&locked.path).unwrap().mode();
        assert_eq!(mode & 0o137, 0, "at most 0640: {mode:o}");

        // Writes go after the header.
        locked.file.write_all(b"x").unwrap();
        let mut all = Vec::new();
        File::open(&locked.path)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(&all[16..], b"x");

        // A taken name is refused and left alone, and no temporary file stays behind.
        let err = create(&dir.0, &n).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&locked.path).unwrap().len(), 17);
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);

        // A temporary file left behind blocks the name rather than being written over.
        let n2 = name("h", 7, 1000, 2, Kind::Spool);
        fs::write(dir.0.join(format!(".{}.tmp", n2.file_name())), b"").unwrap();
        assert_eq!(
            create(&dir.0, &n2).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(!dir.0.join(n2.file_name()).exists());
    }
}
