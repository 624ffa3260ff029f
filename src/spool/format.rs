//! The spool's file header and record format (docs/spool-format.md), and the reader that walks
//! a file's records past torn tails and damaged regions.
//!
//! Pure std + crc32c: the worker, the `kafka-spool` tool and the fuzz target share it.

use std::fmt;

pub const FILE_MAGIC: &[u8; 8] = b"NKSPOOL1";
pub const VERSION: u32 = 1;
pub const FILE_HEADER_LEN: usize = 16;
pub const RECORD_MAGIC: &[u8; 4] = b"NKR1";
/// The largest body a record may have; a longer length field marks damage.
pub const MAX_BODY: usize = 1 << 30;
pub const FLAG_POSSIBLY_DELIVERED: u8 = 1;
pub const FLAG_REPLAYED: u8 = 2;

/// Magic, length and checksum before the body; the trailer after it.
const FRAME_HEAD: usize = 12;
const FRAME_TAIL: usize = 4;
/// A body with every field empty: flags, timestamp, reason, topic, key, header count, value.
const MIN_BODY: usize = 1 + 8 + 1 + 2 + 4 + 2 + 4;
/// A length field's "none": no key, a null header value.
const NONE_LEN: u32 = u32::MAX;

/// The 16 bytes every spool file starts with.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0; FILE_HEADER_LEN];
    header[..8].copy_from_slice(FILE_MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// One event as the spool keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// `FLAG_POSSIBLY_DELIVERED`, `FLAG_REPLAYED`.
    pub flags: u8,
    /// Unix milliseconds; 0 when unknown.
    pub timestamp_ms: i64,
    /// librdkafka's error name; at most 255 bytes (`encode` cuts longer ones).
    pub reason: &'a [u8],
    pub topic: &'a [u8],
    pub key: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    pub value: &'a [u8],
}

impl Record<'_> {
    /// Appends the whole framed record (magic, length, checksum, body, trailer) to `out`.
    ///
    /// Fields past their length field's range are cut (reason to 255 bytes, topic and header
    /// names to 65,535, headers to the first 65,535), so what is written always reads back as
    /// one record; [`fits`](Self::fits) says whether anything would be cut or the body would
    /// be over [`MAX_BODY`], which readers refuse.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let body_len = self.body_len();
        out.reserve(FRAME_HEAD + body_len + FRAME_TAIL);
        out.extend_from_slice(RECORD_MAGIC);
        put_len32(out, body_len);
        let crc_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let body_at = out.len();

        out.push(self.flags);
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        let reason = cut(self.reason, u8::MAX.into());
        out.push(reason.len() as u8);
        out.extend_from_slice(reason);
        put_short(out, self.topic);
        match self.key {
            Some(key) => put_long(out, key),
            None => out.extend_from_slice(&NONE_LEN.to_le_bytes()),
        }
        let headers = &self.headers[..self.headers.len().min(u16::MAX.into())];
        out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (name, value) in headers {
            put_short(out, name);
            match value {
                Some(value) => put_long(out, value),
                None => out.extend_from_slice(&NONE_LEN.to_le_bytes()),
            }
        }
        put_long(out, self.value);

        let crc = crc32c::crc32c(&out[body_at..]);
        out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        put_len32(out, body_len);
    }

    /// The framed size `encode` would append.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEAD + self.body_len() + FRAME_TAIL
    }

    /// Whether `encode` keeps every byte and readers will accept the result.
    pub fn fits(&self) -> bool {
        let short = usize::from(u16::MAX);
        self.reason.len() <= u8::MAX.into()
            && self.topic.len() <= short
            && self.headers.len() <= short
            && self.headers.iter().all(|(name, _)| name.len() <= short)
            && self.body_len() <= MAX_BODY
    }

    fn body_len(&self) -> usize {
        let short = usize::from(u16::MAX);
        let headers = &self.headers[..self.headers.len().min(short)];
        MIN_BODY
            + self.reason.len().min(u8::MAX.into())
            + self.topic.len().min(short)
            + self.key.map_or(0, <[u8]>::len)
            + headers
                .iter()
                .map(|(name, value)| 2 + name.len().min(short) + 4 + value.map_or(0, <[u8]>::len))
                .sum::<usize>()
            + self.value.len()
    }
}

fn cut(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// A u32 length field. Lengths over `u32::MAX` only occur in records far past `MAX_BODY`,
/// which readers refuse anyway; saturating keeps them from looking like a smaller record.
fn put_len32(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}

/// A u16 length and the bytes, cut to fit.
fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = cut(bytes, u16::MAX.into());
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A u32 length and the bytes.
fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len32(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Why a file's header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header: a file cut short while it was created.
    TooShort,
    /// Not a spool file.
    BadMagic,
    /// A version this reader does not know: left in place, never deleted.
    Version(u32),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooShort => write!(f, "shorter than a spool file header"),
            HeaderError::BadMagic => write!(f, "not a spool file (no \"NKSPOOL1\" header)"),
            HeaderError::Version(v) => write!(f, "spool format version {v} is not known"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Checks the file header at the start of `file` (reserved bytes are not checked).
pub fn check_file_header(file: &[u8]) -> Result<(), HeaderError> {
    if file.len() < FILE_HEADER_LEN {
        return Err(HeaderError::TooShort);
    }
    if &file[..8] != FILE_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    match read_u32(file, 8) {
        VERSION => Ok(()),
        v => Err(HeaderError::Version(v)),
    }
}

/// What the reader found at one place in a file. Items tile the file after its header:
/// each starts where the one before it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A good record; `offset` is where its magic is, `len` its framed size.
    Record {
        offset: usize,
        len: usize,
        record: Record<'a>,
    },
    /// A damaged region, skipped up to the next good record.
    Corrupt { offset: usize, len: usize },
    /// Bytes at the end with no good record in or after them: a write cut short.
    Torn { offset: usize, len: usize },
}

/// Walks the records of a whole file's bytes (header included; the caller checked it).
pub fn scan(file: &[u8]) -> Scan<'_> {
    Scan {
        file,
        pos: FILE_HEADER_LEN.min(file.len()),
        found: None,
    }
}

/// The iterator [`scan`] returns.
#[derive(Clone, Debug)]
pub struct Scan<'a> {
    file: &'a [u8],
    pos: usize,
    /// The good record that ended a corrupt region, to be yielded next.
    found: Option<(usize, Record<'a>)>,
}

impl<'a> Iterator for Scan<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let offset = self.pos;
        if let Some((len, record)) = self.found.take() {
            self.pos += len;
            return Some(Item::Record {
                offset,
                len,
                record,
            });
        }
        if offset >= self.file.len() {
            return None;
        }
        if let Some((len, record)) = record_at(self.file, offset) {
            self.pos += len;
            return Some(Item::Record {
                offset,
                len,
                record,
            });
        }
        // Damage here: the region runs up to the next position that holds a good record, or
        // to the end of the file (a torn tail) if none does.
        let mut from = offset + 1;
        while let Some(at) = find_magic(self.file, from) {
            if let Some(found) = record_at(self.file, at) {
                self.pos = at;
                self.found = Some(found);
                return Some(Item::Corrupt {
                    offset,
                    len: at - offset,
                });
            }
            from = at + 1;
        }
        self.pos = self.file.len();
        Some(Item::Torn {
            offset,
            len: self.file.len() - offset,
        })
    }
}

/// The good record at offset `at` of `file` and its framed length, if there is one: magic,
/// length, trailer, checksum and body fields all agree, and it ends within the file. For
/// reading one record back by the offset `scan` gave, without walking the file.
pub fn record_at(file: &[u8], at: usize) -> Option<(usize, Record<'_>)> {
    let rest = file.get(at..)?;
    if rest.len() < FRAME_HEAD + MIN_BODY + FRAME_TAIL || &rest[..4] != RECORD_MAGIC {
        return None;
    }
    let body_len = read_u32(rest, 4) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&body_len) {
        return None;
    }
    let len = FRAME_HEAD + body_len + FRAME_TAIL;
    if rest.len() < len {
        return None;
    }
    // The trailer first: it is cheap, and after damage most candidates fail it.
    if read_u32(rest, FRAME_HEAD + body_len) as usize != body_len {
        return None;
    }
    let body = &rest[FRAME_HEAD..FRAME_HEAD + body_len];
    if crc32c::crc32c(body) != read_u32(rest, 8) {
        return None;
    }
    parse_body(body).map(|record| (len, record))
}

/// The fields of a body whose checksum matched; `None` unless they fill it exactly.
fn parse_body(body: &[u8]) -> Option<Record<'_>> {
    let mut r = Reader(body);
    let flags = r.bytes(1)?[0];
    let timestamp_ms = i64::from_le_bytes(r.bytes(8)?.try_into().ok()?);
    let reason_len = r.bytes(1)?[0];
    let reason = r.bytes(reason_len.into())?;
    let topic = r.short()?;
    let key = r.long()?;
    let count = r.u16()?;
    let mut headers = Vec::with_capacity(usize::from(count).min(r.0.len() / 6));
    for _ in 0..count {
        headers.push((r.short()?, r.long()?));
    }
    let value_len = r.u32()? as usize;
    if value_len != r.0.len() {
        return None;
    }
    Some(Record {
        flags,
        timestamp_ms,
        reason,
        topic,
        key,
        headers,
        value: r.0,
    })
}

/// Takes fields off the front of a body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    /// A u16 length and that many bytes.
    fn short(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.bytes(n.into())
    }

    /// A u32 length (`0xFFFFFFFF`: none) and that many bytes.
    fn long(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? {
            NONE_LEN => Some(None),
            n => self.bytes(n as usize).map(Some),
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The next position at or after `from` that starts with `RECORD_MAGIC`. Looks for its first
/// byte eight bytes at a time, so that skipping a damaged megabyte stays cheap.
fn find_magic(file: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let first = u64::from(RECORD_MAGIC[0]) * ONES;
    let mut i = from;
    while i < file.len() {
        if let Some(word) = file.get(i..i + 8) {
            let x = u64::from_le_bytes(word.try_into().unwrap_or_default()) ^ first;
            // A zero byte in `x` is a candidate; when there is none, skip all eight.
            if (x.wrapping_sub(ONES) & !x & HIGHS) == 0 {
                i += 8;
                continue;
            }
        }
        let end = (i + 8).min(file.len());
        for at in i..end {
            if file[at..].starts_with(RECORD_MAGIC) {
                return Some(at);
            }
        }
        i = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u8) -> Record<'static> {
        Record {
            flags: FLAG_POSSIBLY_DELIVERED,
            timestamp_ms: 1_700_000_000_000 + i64::from(n),
            reason: b"_MSG_TIMED_OUT",
            topic: b"events",
            key: Some(b"user-1"),
            headers: vec![(b"h1", Some(b"v1")), (b"h2", None)],
            value: b"{\"a\":1}",
        }
    }

    fn file_of(records: &[Record<'_>]) -> (Vec<u8>, Vec<usize>) {
        let mut file = file_header().to_vec();
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(file.len());
            r.encode(&mut file);
        }
        (file, offsets)
    }

    fn records<'a>(file: &'a [u8]) -> Vec<Record<'a>> {
        scan(file)
            .filter_map(|item| match item {
                Item::Record { record, .. } => Some(record),
                _ => None,
            })
            .collect()
    }

    /// Items must start right after the header and follow each other without gap or overlap.
    fn assert_tiles(file: &[u8]) {
        let mut pos = FILE_HEADER_LEN;
        for item in scan(file) {
            let (offset, len) = match item {
                Item::Record { offset, len, .. }
                | Item::Corrupt { offset, len }
                | Item::Torn { offset, len } => (offset, len),
            };
            assert_eq!(offset, pos);
            assert!(len > 0);
            pos += len;
        }
        assert_eq!(pos, file.len());
    }

    #[test]
    fn header_round_trip_and_refusals() {
        let header = file_header();
        assert_eq!(&header, b"NKSPOOL1\x01\0\0\0\0\0\0\0");
        assert_eq!(check_file_header(&header), Ok(()));
        assert_eq!(check_file_header(&header[..15]), Err(HeaderError::TooShort));
        assert_eq!(
            check_file_header(b"NKSPOOL2\x01\0\0\0\0\0\0\0"),
            Err(HeaderError::BadMagic)
        );
        assert_eq!(
            check_file_header(b"NKSPOOL1\x02\0\0\0\0\0\0\0"),
            Err(HeaderError::Version(2))
        );
        assert_eq!(
            HeaderError::Version(2).to_string(),
            "spool format version 2 is not known"
        );
    }

    #[test]
    fn round_trip() {
        let long_reason = [b'r'; 300];
        let cases = [
            sample(0),
            Record {
                flags: 0,
                timestamp_ms: 0,
                reason: b"",
                topic: b"t",
                key: None,
                headers: vec![],
                value: b"",
            },
            Record {
                flags: FLAG_REPLAYED | FLAG_POSSIBLY_DELIVERED,
                timestamp_ms: -1,
                reason: b"_QUEUE_FULL",
                topic: b"bytes",
                key: Some(b""),
                headers: vec![
                    (b"", Some(b"")),
                    (b"\xff\x00", None),
                    (b"n", Some(b"\xc3\x28")),
                ],
                value: b"\x00\xff\xfe NKR1 \x80",
            },
        ];
        for record in &cases {
            let (file, offsets) = file_of(std::slice::from_ref(record));
            assert_eq!(file.len() - FILE_HEADER_LEN, record.encoded_len());
            assert!(record.fits());
            let items: Vec<_> = scan(&file).collect();
            assert_eq!(
                items,
                vec![Item::Record {
                    offset: offsets[0],
                    len: record.encoded_len(),
                    record: record.clone(),
                }]
            );
        }

        // A reason over 255 bytes is cut; everything else stays.
        let record = Record {
            reason: &long_reason,
            ..sample(1)
        };
        assert!(!record.fits());
        let (file, _) = file_of(std::slice::from_ref(&record));
        assert_eq!(file.len() - FILE_HEADER_LEN, record.encoded_len());
        assert_eq!(
            records(&file),
            vec![Record {
                reason: &long_reason[..255],
                ..sample(1)
            }]
        );
    }

    #[test]
    fn framing_is_as_specified() {
        let record = Record {
            flags: 1,
            timestamp_ms: 2,
            reason: b"R",
            topic: b"T",
            key: None,
            headers: vec![(b"H", None)],
            value: b"V",
        };
        let mut out = Vec::new();
        record.encode(&mut out);
        let body: &[u8] = b"\x01\x02\0\0\0\0\0\0\0\x01R\x01\0T\xff\xff\xff\xff\x01\0\x01\0H\xff\xff\xff\xff\x01\0\0\0V";
        let mut expected = b"NKR1".to_vec();
        expected.extend_from_slice(&(body.len() as u32).to_le_bytes());
        expected.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        expected.extend_from_slice(body);
        expected.extend_from_slice(&(body.len() as u32).to_le_bytes());
        assert_eq!(out, expected);
    }

    #[test]
    fn only_the_header() {
        assert_eq!(scan(&file_header()).count(), 0);
        assert_eq!(scan(b"NKS").count(), 0);
    }

    #[test]
    fn torn_tail_at_every_cut() {
        let all = [sample(0), sample(1), sample(2)];
        let (file, offsets) = file_of(&all);
        for cut in offsets[2] + 1..file.len() {
            let torn = &file[..cut];
            let items: Vec<_> = scan(torn).collect();
            assert_eq!(items.len(), 3, "cut at {cut}");
            assert_eq!(records(torn), all[..2].to_vec(), "cut at {cut}");
            assert_eq!(
                items[2],
                Item::Torn {
                    offset: offsets[2],
                    len: cut - offsets[2]
                }
            );
            assert_tiles(torn);
        }
        // A write that extended the file with zeros (delayed allocation) is torn too.
        let mut zeros = file[..offsets[2]].to_vec();
        zeros.extend_from_slice(&[0; 100]);
        assert_eq!(
            scan(&zeros).last(),
            Some(Item::Torn {
                offset: offsets[2],
                len: 100
            })
        );
    }

    #[test]
    fn flipped_byte_in_a_middle_record() {
        let all = [sample(0), sample(1), sample(2)];
        let (file, offsets) = file_of(&all);
        for at in offsets[1]..offsets[2] {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = file.clone();
                damaged[at] ^= flip;
                let items: Vec<_> = scan(&damaged).collect();
                let corrupt: Vec<_> = items
                    .iter()
                    .filter(|i| matches!(i, Item::Corrupt { .. }))
                    .collect();
                assert_eq!(
                    corrupt,
                    vec![&Item::Corrupt {
                        offset: offsets[1],
                        len: offsets[2] - offsets[1]
                    }],
                    "byte {at} ^ {flip:#x}"
                );
                assert_eq!(records(&damaged), vec![sample(0), sample(2)]);
                assert_tiles(&damaged);
            }
        }
    }

    #[test]
    fn body_fields_must_fill_the_body() {
        // A checksum that matches a body whose value length disagrees is still corrupt.
        let mut out = Vec::new();
        sample(0).encode(&mut out);
        let body_end = out.len() - FRAME_TAIL;
        let value_len_at = body_end - sample(0).value.len() - 4;
        out[value_len_at] -= 1;
        let crc = crc32c::crc32c(&out[FRAME_HEAD..body_end]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        let mut file = file_header().to_vec();
        file.extend_from_slice(&out);
        sample(1).encode(&mut file);
        let items: Vec<_> = scan(&file).collect();
        assert!(matches!(items[0], Item::Corrupt { offset: 16, .. }));
        assert_eq!(records(&file), vec![sample(1)]);
        assert_tiles(&file);
    }

    #[test]
    fn garbage_between_records() {
        let mut file = file_header().to_vec();
        sample(0).encode(&mut file);
        let garbage_at = file.len();
        // Looks like magic, then a length that points past the end.
        file.extend_from_slice(b"NKR1\xff\xff\xff\x3fjunkNKRNK");
        file.extend_from_slice(&[0x4e; 37]);
        let next = file.len();
        sample(1).encode(&mut file);
        file.extend_from_slice(b"NKR1NKR1");
        let items: Vec<_> = scan(&file).collect();
        assert_eq!(items.len(), 4);
        assert_eq!(
            items[1],
            Item::Corrupt {
                offset: garbage_at,
                len: next - garbage_at
            }
        );
        assert!(matches!(items[3], Item::Torn { len: 8, .. }));
        assert_eq!(records(&file), vec![sample(0), sample(1)]);
        assert_tiles(&file);

        // Garbage right after the header, then a good record.
        let mut file = file_header().to_vec();
        file.extend_from_slice(b"xyz");
        sample(2).encode(&mut file);
        let items: Vec<_> = scan(&file).collect();
        assert_eq!(items[0], Item::Corrupt { offset: 16, len: 3 });
        assert_eq!(records(&file), vec![sample(2)]);
    }

    #[test]
    fn a_damaged_length_does_not_hide_the_next_record() {
        // The first record's length now covers the next one: that one is still found.
        let (mut file, offsets) = file_of(&[sample(0), sample(1), sample(2)]);
        file[offsets[0] + 4] = 0xff;
        assert_eq!(records(&file), vec![sample(1), sample(2)]);
        assert_tiles(&file);
    }

    #[test]
    fn one_record_by_its_offset() {
        let (file, offsets) = file_of(&[sample(0), sample(1)]);
        let len = sample(1).encoded_len();
        assert_eq!(record_at(&file, offsets[1]), Some((len, sample(1))));
        assert_eq!(record_at(&file, offsets[1] + 1), None);
        assert_eq!(record_at(&file[..file.len() - 1], offsets[1]), None);
        assert_eq!(record_at(&file, file.len()), None);
        assert_eq!(record_at(&file, file.len() + 1), None);
    }

    #[test]
    fn find_magic_at_every_alignment() {
        for pad in 0..20 {
            let mut bytes = vec![b'N'; pad];
            bytes.extend_from_slice(b"NKR1");
            bytes.extend_from_slice(&[0; 9]);
            assert_eq!(find_magic(&bytes, 0), Some(pad));
            assert_eq!(find_magic(&bytes, pad + 1), None);
        }
        assert_eq!(find_magic(b"", 0), None);
        assert_eq!(find_magic(b"NKR", 0), None);
    }
}
