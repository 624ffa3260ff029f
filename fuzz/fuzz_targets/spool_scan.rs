//! The spool reader: any bytes after a valid file header. No panic; every record it yields
//! re-encodes to exactly the bytes it was read from; the items tile the file in order, a
//! corrupt region is always followed by a good record, and a torn tail is always last.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Compiled straight from the module's source, like the files in src/lib.rs.
#[allow(dead_code)]
#[path = "../../src/spool/format.rs"]
mod format;

use format::Item;

fuzz_target!(|data: &[u8]| {
    let mut file = format::file_header().to_vec();
    file.extend_from_slice(data);
    assert_eq!(format::check_file_header(&file), Ok(()));

    let mut pos = format::FILE_HEADER_LEN;
    let mut after_corrupt = false;
    let mut encoded = Vec::new();
    for item in format::scan(&file) {
        assert!(pos < file.len(), "an item after the end: {item:?}");
        match item {
            Item::Record {
                offset,
                len,
                record,
            } => {
                assert_eq!(offset, pos, "records follow each other");
                assert_eq!(record.encoded_len(), len);
                assert!(record.fits());
                encoded.clear();
                record.encode(&mut encoded);
                assert_eq!(
                    &file[offset..offset + len],
                    &encoded[..],
                    "record re-encodes"
                );
                pos += len;
                after_corrupt = false;
            }
            Item::Corrupt { offset, len } => {
                assert_eq!(
                    offset, pos,
                    "a corrupt region starts where the last item ended"
                );
                assert!(len > 0 && !after_corrupt, "one region per damaged stretch");
                pos += len;
                assert!(pos < file.len(), "a corrupt region ends at a good record");
                after_corrupt = true;
            }
            Item::Torn { offset, len } => {
                assert_eq!(offset, pos, "a torn tail starts where the last item ended");
                assert!(!after_corrupt, "a torn tail never follows a corrupt region");
                pos += len;
                assert_eq!(pos, file.len(), "a torn tail runs to the end");
            }
        }
    }
    assert!(!after_corrupt, "a corrupt region is followed by a record");
    assert_eq!(pos, file.len(), "the items cover the file");
});
