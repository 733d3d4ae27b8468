//! Every on-disk constant of the store, and the pure helpers that go with them.
//!
//! These values are RocketMQ's (see `rocketmq-protocol.md` §6–7), so a store directory
//! written by Apache RocketMQ or rocketmq-rust opens here and ours opens there.
//!
//! - CommitLog record: `[total:4][magic:4][body_crc:4][queue_id:4][flag:4][queue_offset:8]
//!   [physical_offset:8][sys_flag:4][born_ts:8][born_host:8|20][store_ts:8][store_host:8|20]
//!   [reconsume_times:4][prepared_tx_offset:8][body_len:4][body][topic_len:1|2][topic]
//!   [props_len:2][props]`, big-endian.
//! - End-of-segment filler: `[remaining:4][BLANK_MAGIC_CODE:4]`.
//! - ConsumeQueue entry: `[commitlog_offset:8][size:4][tag_hash:8]`.
//! - Segment files are named by the 20-digit zero-padded offset of their first byte.

/// Magic code of a V1 record (topic length in one byte).
pub const MESSAGE_MAGIC_CODE_V1: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic code of a V2 record (topic length in two bytes).
pub const MESSAGE_MAGIC_CODE_V2: i32 = 0xDAA3_20AB_u32 as i32;
/// Magic code of the filler that closes a CommitLog segment.
pub const BLANK_MAGIC_CODE: i32 = 0xCBD4_3194_u32 as i32;
/// Bytes that must always remain at the end of a segment for the filler.
pub const END_FILE_MIN_BLANK_LENGTH: u64 = 8;

/// Size of one ConsumeQueue entry.
pub const CQ_ENTRY_SIZE: usize = 20;
/// Entries per ConsumeQueue file by default (`mappedFileSizeConsumeQueue` / 20).
pub const CQ_ENTRIES_PER_FILE: u64 = 300_000;

/// Default CommitLog segment size (`mappedFileSizeCommitLog`).
pub const DEFAULT_COMMITLOG_SEGMENT_SIZE: u64 = 1024 * 1024 * 1024;
/// Default largest message (`maxMessageSize`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// IndexFile header size.
pub const INDEX_HEADER_SIZE: usize = 40;
/// IndexFile hash slot size.
pub const INDEX_SLOT_SIZE: usize = 4;
/// IndexFile entry size.
pub const INDEX_ENTRY_SIZE: usize = 20;
/// Default hash slots per IndexFile (`maxHashSlotNum`).
pub const DEFAULT_INDEX_SLOTS: u32 = 5_000_000;
/// Default entries per IndexFile (`maxIndexNum`).
pub const DEFAULT_INDEX_ENTRIES: u32 = 20_000_000;

/// Size of the `checkpoint` file (one page).
pub const CHECKPOINT_FILE_SIZE: usize = 4096;

/// `MessageSysFlag` bits used by the store.
pub mod sys_flag {
    /// Body compressed by the producer.
    pub const COMPRESSED: i32 = 0x1;
    /// Transaction type mask.
    pub const TRANSACTION_TYPE_MASK: i32 = 0xC;
    /// Half (prepared) transactional message.
    pub const TRANSACTION_PREPARED: i32 = 0x4;
    /// Commit of a transactional message.
    pub const TRANSACTION_COMMIT: i32 = 0x8;
    /// Rollback of a transactional message.
    pub const TRANSACTION_ROLLBACK: i32 = 0xC;
    /// Born host is IPv6 (16 + 4 bytes).
    pub const BORNHOST_V6: i32 = 0x10;
    /// Store host is IPv6 (16 + 4 bytes).
    pub const STOREHOST_V6: i32 = 0x20;
}

/// Property keys the store reads (`MessageConst`).
pub mod property {
    /// Space-separated business keys, indexed.
    pub const KEYS: &str = "KEYS";
    /// The single tag.
    pub const TAGS: &str = "TAGS";
    /// Client-generated unique id, indexed.
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    /// Delay level.
    pub const DELAY: &str = "DELAY";
    /// Separator between a property name and its value.
    pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
    /// Separator after each property.
    pub const PROPERTY_SEPARATOR: char = '\u{2}';
}

/// Builds a segment file name: the offset as 20 zero-padded decimal digits.
pub fn segment_file_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// Parses a segment file name built by [`segment_file_name`]; `None` for anything else.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// Java's `String.hashCode()`: `h = 31*h + unit` over UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The ConsumeQueue tags code of a tag: its Java hash, sign-extended; 0 without a tag.
pub fn tags_code(tag: Option<&str>) -> i64 {
    match tag {
        Some(t) if !t.is_empty() => i64::from(java_string_hash(t)),
        _ => 0,
    }
}

/// The IndexFile key hash: `abs(hashCode)`, with `Integer.MIN_VALUE` mapped to 0.
pub fn index_key_hash(key: &str) -> u32 {
    let h = java_string_hash(key);
    if h == i32::MIN {
        0
    } else {
        h.unsigned_abs()
    }
}

/// The body CRC as stored: CRC32 (IEEE) with the sign bit cleared.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// One ConsumeQueue entry: `[commitlog_offset:8][size:4][tag_hash:8]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    /// CommitLog physical offset of the record.
    pub commitlog_offset: i64,
    /// Record size in bytes.
    pub size: i32,
    /// Tags code (or delivery time for the schedule topic).
    pub tags_code: i64,
}

impl CqEntry {
    /// Encodes the entry into its 20 bytes.
    pub fn encode(&self) -> [u8; CQ_ENTRY_SIZE] {
        let mut out = [0u8; CQ_ENTRY_SIZE];
        out[0..8].copy_from_slice(&self.commitlog_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.size.to_be_bytes());
        out[12..20].copy_from_slice(&self.tags_code.to_be_bytes());
        out
    }

    /// Decodes an entry from exactly 20 bytes.
    pub fn decode(bytes: &[u8; CQ_ENTRY_SIZE]) -> Self {
        let (a, rest) = bytes.split_at(8);
        let (b, c) = rest.split_at(4);
        CqEntry {
            commitlog_offset: i64::from_be_bytes(a.try_into().unwrap_or([0; 8])),
            size: i32::from_be_bytes(b.try_into().unwrap_or([0; 4])),
            tags_code: i64::from_be_bytes(c.try_into().unwrap_or([0; 8])),
        }
    }

    /// The placeholder RocketMQ writes to pre-fill a file that starts past its position.
    pub const PLACEHOLDER: CqEntry = CqEntry {
        commitlog_offset: 0,
        size: i32::MAX,
        tags_code: 0,
    };

    /// Whether this entry points at a real record (not empty, not a placeholder).
    pub fn is_valid(&self) -> bool {
        self.commitlog_offset >= 0 && self.size > 0 && self.size != i32::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(0), "00000000000000000000");
        assert_eq!(segment_file_name(1_073_741_824), "00000000001073741824");
        assert_eq!(
            parse_segment_file_name("00000000001073741824"),
            Some(1_073_741_824)
        );
        assert_eq!(parse_segment_file_name("0000000000107374182"), None);
        assert_eq!(parse_segment_file_name("0000000000107374182x"), None);
        assert_eq!(parse_segment_file_name("abort"), None);
        for off in [0u64, 7, 6_000_000, u64::from(u32::MAX) * 3] {
            assert_eq!(parse_segment_file_name(&segment_file_name(off)), Some(off));
        }
    }

    #[test]
    fn magic_codes_are_rocketmqs() {
        assert_eq!(MESSAGE_MAGIC_CODE_V1, -626_843_481);
        assert_eq!(MESSAGE_MAGIC_CODE_V2, -626_843_477);
        assert_eq!(BLANK_MAGIC_CODE, -875_286_124);
        assert_eq!(CQ_ENTRY_SIZE * CQ_ENTRIES_PER_FILE as usize, 6_000_000);
        assert_eq!(
            INDEX_HEADER_SIZE
                + DEFAULT_INDEX_SLOTS as usize * INDEX_SLOT_SIZE
                + DEFAULT_INDEX_ENTRIES as usize * INDEX_ENTRY_SIZE,
            420_000_040
        );
    }

    #[test]
    fn java_hash_matches_java() {
        // Values computed by java.lang.String#hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("TagA"), 2_598_919);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Non-ASCII: UTF-16 code units, including a surrogate pair.
        assert_eq!(java_string_hash("é"), 233);
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
        assert_eq!(index_key_hash("polygenelubricants"), 0);
        assert_eq!(tags_code(Some("polygenelubricants")), -2_147_483_648);
        assert_eq!(tags_code(None), 0);
    }

    #[test]
    fn cq_entry_golden_bytes() {
        // Written by hand from the fact sheet: offset 0x1122334455667788, size 0x100,
        // tags code -1 (all ones).
        let golden: [u8; 20] = [
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x00, 0x00, 0x01, 0x00, 0xFF, 0xFF,
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        let e = CqEntry {
            commitlog_offset: 0x1122_3344_5566_7788,
            size: 256,
            tags_code: -1,
        };
        assert_eq!(e.encode(), golden);
        assert_eq!(CqEntry::decode(&golden), e);
        assert!(e.is_valid());
        assert!(!CqEntry::PLACEHOLDER.is_valid());
        assert!(!CqEntry::decode(&[0; 20]).is_valid());
    }

    #[test]
    fn crc_is_masked() {
        // crc32("123456789") = 0xCBF43926; masked clears the top bit.
        assert_eq!(body_crc(b"123456789"), 0x4BF4_3926);
    }
}
