//! DLedger's on-disk formats: the entry files and the entry index of RocketMQ's Raft
//! CommitLog mode (`enableDLegerCommitLog=true`, issue 15). Every DLedger layout fact
//! lives here and nowhere else.
//!
//! Entry file (`<store>/dledger-<selfId>/data/<20-digit offset>`), big-endian:
//!
//! ```text
//! [magic:4][size:4][index:8][term:8][pos:8][channel:4][chain_crc:4][body_crc:4][body_len:4][body]
//!  0        4       8        16      24     32         36           40          44          48
//! ```
//!
//! - `magic` is the entry type: 1 normal (the body is one CommitLog record), 2 no-op (a
//!   new leader's first entry, empty body), 3 configuration change.
//! - `size` is the whole entry, header included: `48 + body_len`.
//! - `index` is the Raft log index (consecutive from the first entry), `term` its term.
//! - `pos` is the entry's own offset in the entry files, so an entry read from a wrong
//!   place is recognised.
//! - `channel` is reserved (0); `chain_crc` is unused by DLedger (0).
//! - `body_crc`: DLedger writes 0. ferrocket writes the CRC32 of the body masked to 31
//!   bits (as a CommitLog record's body CRC) and checks it when it is not 0, so files of
//!   either origin open.
//! - A segment ends with a filler when the next entry does not fit: `[-1:4][len:4]`
//!   (`len` bytes to the end of the segment, at least 8), or plain zeros.
//!
//! In RocketMQ's DLedger mode the CommitLog record in a normal entry has its
//! PHYSICALOFFSET rewritten to `pos + 48`, so message ids point at the record, not at
//! the entry header ([`record_offset`]).
//!
//! Index file (`<store>/dledger-<selfId>/index/<20-digit offset>`): entry `i` at byte
//! `i × 32`: `[magic:4][pos:8][size:4][index:8][term:8]`.

use thiserror::Error;

/// Bytes before an entry's body.
pub const BODY_OFFSET: usize = 48;
/// Offset of `pos` in the header.
pub const POS_OFFSET: usize = 24;
/// One index unit.
pub const INDEX_UNIT_SIZE: usize = 32;
/// Magic of a segment's end filler.
pub const BLANK_MAGIC: i32 = -1;
/// Smallest filler.
pub const MIN_BLANK_LEN: usize = 8;
/// DLedger's default entry segment size (`mappedFileSizeForEntryData`, 1 GiB).
pub const DEFAULT_DATA_FILE_SIZE: u64 = 1024 * 1024 * 1024;
/// DLedger's default index segment size (`mappedFileSizeForEntryIndex`: 5 Mi units).
pub const DEFAULT_INDEX_FILE_SIZE: u64 = INDEX_UNIT_SIZE as u64 * 5 * 1024 * 1024;

/// An entry's type (its magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// One CommitLog record.
    Normal,
    /// Empty: a new leader's first entry.
    Noop,
    /// A membership change.
    ConfigChange,
    /// ferrocket: a normal entry whose bytes are in the CommitLog; the body is
    /// `[pos:8][len:8]` (where and how long). Not a DLedger type.
    Reference,
}

impl EntryType {
    /// The magic written for this type.
    pub fn magic(self) -> i32 {
        match self {
            EntryType::Normal => 1,
            EntryType::Noop => 2,
            EntryType::ConfigChange => 3,
            EntryType::Reference => 4,
        }
    }

    /// The type of a magic, if it is one.
    pub fn from_magic(magic: i32) -> Option<Self> {
        match magic {
            1 => Some(EntryType::Normal),
            2 => Some(EntryType::Noop),
            3 => Some(EntryType::ConfigChange),
            4 => Some(EntryType::Reference),
            _ => None,
        }
    }
}

/// What is wrong with bytes read as an entry or an index unit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: {needed} bytes needed at {at}, {have} there")]
    Truncated {
        /// Where the structure starts.
        at: u64,
        /// Bytes it needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// Not an entry type, nor a filler.
    #[error("unknown entry magic {magic} at {at}")]
    Magic {
        /// Where.
        at: u64,
        /// The magic read.
        magic: i32,
    },
    /// `size` and `body_len` disagree, or `size` is impossible.
    #[error("entry at {at}: size {size} does not fit body length {body_len}")]
    Size {
        /// Where.
        at: u64,
        /// `size`.
        size: i32,
        /// `body_len`.
        body_len: i32,
    },
    /// The entry says it lives somewhere else.
    #[error("entry at {at} records position {pos}")]
    Position {
        /// Where it was read.
        at: u64,
        /// The `pos` it holds.
        pos: i64,
    },
    /// A body CRC that does not match.
    #[error("entry at {at}: body CRC {stored:#x}, computed {computed:#x}")]
    Crc {
        /// Where.
        at: u64,
        /// Stored.
        stored: i32,
        /// Computed.
        computed: i32,
    },
    /// Raft indexes must follow one another.
    #[error("entry at {at} has index {index}, {expected} expected")]
    Index {
        /// Where.
        at: u64,
        /// Found.
        index: i64,
        /// Expected.
        expected: i64,
    },
}

/// An entry's 48-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// Type.
    pub kind: EntryType,
    /// Whole entry size (`48 + body_len`).
    pub size: i32,
    /// Raft index.
    pub index: i64,
    /// Raft term.
    pub term: i64,
    /// The entry's own offset in the entry files.
    pub pos: i64,
    /// Reserved.
    pub channel: i32,
    /// Unused by DLedger.
    pub chain_crc: i32,
    /// Body CRC (0 = not computed).
    pub body_crc: i32,
    /// Body length.
    pub body_len: i32,
}

/// The body CRC ferrocket writes: CRC32 masked to 31 bits, never 0 (0 means "not
/// computed" in DLedger's files).
pub fn body_crc(body: &[u8]) -> i32 {
    let c = (crc32fast::hash(body) & 0x7FFF_FFFF) as i32;
    if c == 0 {
        1
    } else {
        c
    }
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(w)
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(w)
}

impl EntryHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; BODY_OFFSET] {
        let mut b = [0u8; BODY_OFFSET];
        b[0..4].copy_from_slice(&self.kind.magic().to_be_bytes());
        b[4..8].copy_from_slice(&self.size.to_be_bytes());
        b[8..16].copy_from_slice(&self.index.to_be_bytes());
        b[16..24].copy_from_slice(&self.term.to_be_bytes());
        b[24..32].copy_from_slice(&self.pos.to_be_bytes());
        b[32..36].copy_from_slice(&self.channel.to_be_bytes());
        b[36..40].copy_from_slice(&self.chain_crc.to_be_bytes());
        b[40..44].copy_from_slice(&self.body_crc.to_be_bytes());
        b[44..48].copy_from_slice(&self.body_len.to_be_bytes());
        b
    }

    /// Decodes a header read at offset `at` (for errors), checking that its magic is an
    /// entry type and that `size` and `body_len` agree.
    ///
    /// # Errors
    /// [`FormatError`].
    pub fn decode(b: &[u8], at: u64) -> Result<Self, FormatError> {
        if b.len() < BODY_OFFSET {
            return Err(FormatError::Truncated {
                at,
                needed: BODY_OFFSET,
                have: b.len(),
            });
        }
        let magic = be_i32(b, 0);
        let kind = EntryType::from_magic(magic).ok_or(FormatError::Magic { at, magic })?;
        let size = be_i32(b, 4);
        let body_len = be_i32(b, 44);
        let expected = i64::from(body_len) + BODY_OFFSET as i64;
        if body_len < 0 || i64::from(size) != expected {
            return Err(FormatError::Size { at, size, body_len });
        }
        Ok(EntryHeader {
            kind,
            size,
            index: be_i64(b, 8),
            term: be_i64(b, 16),
            pos: be_i64(b, 24),
            channel: be_i32(b, 32),
            chain_crc: be_i32(b, 36),
            body_crc: be_i32(b, 40),
            body_len,
        })
    }
}

/// Encodes a whole entry at entry-file offset `pos` (bodies are CommitLog records, at
/// most `maxMessageSize`, far below 2 GiB).
pub fn encode_entry(kind: EntryType, index: i64, term: i64, pos: i64, body: &[u8]) -> Vec<u8> {
    let body_len = i32::try_from(body.len()).unwrap_or(i32::MAX - BODY_OFFSET as i32);
    let h = EntryHeader {
        kind,
        size: body_len + BODY_OFFSET as i32,
        index,
        term,
        pos,
        channel: 0,
        chain_crc: 0,
        body_crc: body_crc(body),
        body_len,
    };
    let mut out = Vec::with_capacity(BODY_OFFSET + body.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(body);
    out
}

/// Where the CommitLog record of the entry at `pos` starts (its PHYSICALOFFSET in
/// RocketMQ's DLedger mode).
pub fn record_offset(pos: i64) -> i64 {
    pos + BODY_OFFSET as i64
}

/// One unit of the entry index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexUnit {
    /// The entry's magic.
    pub magic: i32,
    /// The entry's offset in the entry files.
    pub pos: i64,
    /// The entry's size.
    pub size: i32,
    /// Raft index (the unit sits at `index × 32`).
    pub index: i64,
    /// Raft term.
    pub term: i64,
}

impl IndexUnit {
    /// The unit for an entry header.
    pub fn of(h: &EntryHeader) -> Self {
        IndexUnit {
            magic: h.kind.magic(),
            pos: h.pos,
            size: h.size,
            index: h.index,
            term: h.term,
        }
    }

    /// Encodes the unit.
    pub fn encode(&self) -> [u8; INDEX_UNIT_SIZE] {
        let mut b = [0u8; INDEX_UNIT_SIZE];
        b[0..4].copy_from_slice(&self.magic.to_be_bytes());
        b[4..12].copy_from_slice(&self.pos.to_be_bytes());
        b[12..16].copy_from_slice(&self.size.to_be_bytes());
        b[16..24].copy_from_slice(&self.index.to_be_bytes());
        b[24..32].copy_from_slice(&self.term.to_be_bytes());
        b
    }

    /// Decodes a unit read at offset `at`.
    ///
    /// # Errors
    /// Too few bytes, or a magic that is no entry type.
    pub fn decode(b: &[u8], at: u64) -> Result<Self, FormatError> {
        if b.len() < INDEX_UNIT_SIZE {
            return Err(FormatError::Truncated {
                at,
                needed: INDEX_UNIT_SIZE,
                have: b.len(),
            });
        }
        let magic = be_i32(b, 0);
        if EntryType::from_magic(magic).is_none() {
            return Err(FormatError::Magic { at, magic });
        }
        Ok(IndexUnit {
            magic,
            pos: be_i64(b, 4),
            size: be_i32(b, 12),
            index: be_i64(b, 16),
            term: be_i64(b, 24),
        })
    }
}

/// What [`scan_segment`] found at the end of a segment's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// A filler, or zeros, to the end of the segment: the next entry is in the next one.
    Filled,
    /// Bytes that are no entry: a torn write (after the last flush) or damage.
    Bad(FormatError),
}

/// The entries of one segment holding bytes `[from, from + seg.len())` of the entry
/// files, checked: magic, sizes, each entry's `pos`, a non-zero body CRC, and indexes
/// following `prev_index` one by one (`None` for the first segment of a log, whose
/// first index is taken as it is). Stops at the filler (or zeros) or at the first bad
/// entry, which it returns with the good ones before it.
pub fn scan_segment(
    seg: &[u8],
    from: u64,
    mut prev_index: Option<i64>,
) -> (Vec<EntryHeader>, SegmentEnd) {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = &seg[at..];
        let here = from + at as u64;
        if rest.len() < MIN_BLANK_LEN || rest.iter().take(8).all(|b| *b == 0) {
            return (out, SegmentEnd::Filled);
        }
        if be_i32(rest, 0) == BLANK_MAGIC {
            return (out, SegmentEnd::Filled);
        }
        let h = match EntryHeader::decode(rest, here) {
            Ok(h) => h,
            Err(e) => return (out, SegmentEnd::Bad(e)),
        };
        let size = h.size as usize;
        if size > rest.len() {
            return (
                out,
                SegmentEnd::Bad(FormatError::Truncated {
                    at: here,
                    needed: size,
                    have: rest.len(),
                }),
            );
        }
        if h.pos != here as i64 {
            return (
                out,
                SegmentEnd::Bad(FormatError::Position {
                    at: here,
                    pos: h.pos,
                }),
            );
        }
        if h.body_crc != 0 {
            let computed = body_crc(&rest[BODY_OFFSET..size]);
            if computed != h.body_crc {
                return (
                    out,
                    SegmentEnd::Bad(FormatError::Crc {
                        at: here,
                        stored: h.body_crc,
                        computed,
                    }),
                );
            }
        }
        if let Some(p) = prev_index {
            if h.index != p + 1 {
                return (
                    out,
                    SegmentEnd::Bad(FormatError::Index {
                        at: here,
                        index: h.index,
                        expected: p + 1,
                    }),
                );
            }
        }
        prev_index = Some(h.index);
        out.push(h);
        at += size;
    }
}

/// The filler that closes a segment with `remaining` bytes left (at least
/// [`MIN_BLANK_LEN`]).
pub fn filler(remaining: usize) -> [u8; MIN_BLANK_LEN] {
    let mut b = [0u8; MIN_BLANK_LEN];
    b[0..4].copy_from_slice(&BLANK_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&i32::try_from(remaining).unwrap_or(i32::MAX).to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes as DLedger writes them for one normal entry (body CRC 0, as DLedger leaves
    /// it): the layout, field by field.
    #[test]
    fn header_golden_bytes() {
        let h = EntryHeader {
            kind: EntryType::Normal,
            size: 51,
            index: 7,
            term: 2,
            pos: 4096,
            channel: 0,
            chain_crc: 0,
            body_crc: 0,
            body_len: 3,
        };
        let b = h.encode();
        assert_eq!(&b[0..4], &[0, 0, 0, 1]);
        assert_eq!(&b[4..8], &[0, 0, 0, 51]);
        assert_eq!(&b[8..16], &7i64.to_be_bytes());
        assert_eq!(&b[16..24], &2i64.to_be_bytes());
        assert_eq!(&b[POS_OFFSET..POS_OFFSET + 8], &4096i64.to_be_bytes());
        assert_eq!(&b[44..48], &[0, 0, 0, 3]);
        assert_eq!(EntryHeader::decode(&b, 0), Ok(h));
        let u = IndexUnit::of(&h).encode();
        assert_eq!(&u[0..4], &[0, 0, 0, 1]);
        assert_eq!(&u[4..12], &4096i64.to_be_bytes());
        assert_eq!(&u[12..16], &[0, 0, 0, 51]);
        assert_eq!(&u[16..24], &7i64.to_be_bytes());
        assert_eq!(&u[24..32], &2i64.to_be_bytes());
        assert_eq!(record_offset(4096), 4144);
    }

    fn segment(from: u64, first_index: i64, bodies: &[Vec<u8>], size: usize) -> Vec<u8> {
        let mut seg = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let pos = from as i64 + seg.len() as i64;
            seg.extend(encode_entry(
                EntryType::Normal,
                first_index + i as i64,
                3,
                pos,
                body,
            ));
        }
        let rest = size - seg.len();
        if rest >= MIN_BLANK_LEN {
            seg.extend_from_slice(&filler(rest));
        }
        seg.resize(size, 0);
        seg
    }

    proptest! {
        #[test]
        fn headers_and_units_round_trip(
            magic in 1i32..=3, body_len in 0i32..1_000_000, index in 0i64..i64::MAX,
            term in 0i64..i64::MAX, pos in 0i64..i64::MAX, crc in any::<i32>(),
        ) {
            let h = EntryHeader {
                kind: EntryType::from_magic(magic).unwrap(),
                size: body_len + BODY_OFFSET as i32,
                index, term, pos, channel: 0, chain_crc: 0, body_crc: crc, body_len,
            };
            prop_assert_eq!(EntryHeader::decode(&h.encode(), 0), Ok(h));
            let u = IndexUnit::of(&h);
            prop_assert_eq!(IndexUnit::decode(&u.encode(), 0), Ok(u));
        }

        /// A segment of entries and its filler scans back to exactly those entries.
        #[test]
        fn segments_scan_back(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            from_page in 0u64..1000, first in 1i64..1_000_000,
        ) {
            let from = from_page * 4096;
            let seg = segment(from, first, &bodies, 8192);
            let (found, end) = scan_segment(&seg, from, Some(first - 1));
            prop_assert_eq!(end, SegmentEnd::Filled);
            prop_assert_eq!(found.len(), bodies.len());
            for (i, h) in found.iter().enumerate() {
                prop_assert_eq!(h.index, first + i as i64);
                prop_assert_eq!(h.body_len as usize, bodies[i].len());
            }
        }

        /// Any one flipped byte in an entry is either caught or leaves a header that
        /// still decodes to the same entry positions (a flipped term/channel byte):
        /// never an entry read at a wrong place or a body with the wrong bytes.
        #[test]
        fn one_flipped_byte_never_yields_a_wrong_body(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 1..10),
            which in any::<prop::sample::Index>(), bit in 0u8..8,
        ) {
            let seg = segment(0, 1, &bodies, 4096);
            let used: usize = bodies.iter().map(|b| b.len() + BODY_OFFSET).sum();
            let at = which.index(used);
            let mut bad = seg.clone();
            bad[at] ^= 1 << bit;
            let (found, _) = scan_segment(&bad, 0, Some(0));
            let mut off = 0usize;
            for (i, h) in found.iter().enumerate() {
                prop_assert_eq!(h.pos as usize, off);
                prop_assert_eq!(&bad[off + BODY_OFFSET..off + h.size as usize], &bodies[i][..]);
                off += h.size as usize;
            }
        }
    }

    #[test]
    fn bad_entries_are_named() {
        let body = b"record".to_vec();
        let seg = segment(0, 1, &[body.clone(), body.clone()], 1024);
        // A gap in the indexes.
        let (found, end) = scan_segment(&seg, 0, Some(5));
        assert!(found.is_empty());
        assert!(matches!(
            end,
            SegmentEnd::Bad(FormatError::Index { expected: 6, .. })
        ));
        // An entry read where it does not live.
        let (_, end) = scan_segment(&seg, 4096, Some(0));
        assert!(matches!(end, SegmentEnd::Bad(FormatError::Position { .. })));
        // A body byte changed.
        let mut bad = seg.clone();
        bad[BODY_OFFSET + 1] ^= 0x40;
        let (found, end) = scan_segment(&bad, 0, Some(0));
        assert!(found.is_empty());
        assert!(matches!(end, SegmentEnd::Bad(FormatError::Crc { .. })));
        // DLedger's own entries (body CRC 0) are taken as they are.
        let mut theirs = seg.clone();
        theirs[40..44].copy_from_slice(&[0; 4]);
        let (found, end) = scan_segment(&theirs, 0, Some(0));
        assert_eq!((found.len(), end), (2, SegmentEnd::Filled));
        // An unknown magic.
        let mut junk = seg;
        junk[0..4].copy_from_slice(&9i32.to_be_bytes());
        let (_, end) = scan_segment(&junk, 0, None);
        assert!(matches!(
            end,
            SegmentEnd::Bad(FormatError::Magic { magic: 9, .. })
        ));
    }
}
