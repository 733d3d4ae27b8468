//! Every on-disk constant of the store, the pure helpers that go with them, and
//! [`RecordView`], the one reader of a CommitLog record's bytes.
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

use super::message::RecordError;

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
    /// `true` on a transactional half message (`PROPERTY_TRANSACTION_PREPARED`).
    pub const TRAN_MSG: &str = "TRAN_MSG";
    /// 5.x timer message: absolute delivery time, ms.
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    /// 5.x timer message: delay, seconds.
    pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
    /// 5.x timer message: delay, ms.
    pub const TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
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

/// Byte position of QUEUEOFFSET in a record.
pub const POS_QUEUE_OFFSET: usize = 20;
/// Byte position of PHYSICALOFFSET in a record.
pub const POS_PHYSICAL_OFFSET: usize = 28;
/// Byte position of SYSFLAG in a record.
pub const POS_SYS_FLAG: usize = 36;
/// Byte position of BORNTIMESTAMP in a record.
pub const POS_BORN_TIMESTAMP: usize = 40;
/// Byte position of BORNHOST in a record.
pub const POS_BORN_HOST: usize = 48;

fn be<const N: usize>(b: &[u8], p: usize) -> Option<[u8; N]> {
    b.get(p..p.checked_add(N)?)?.try_into().ok()
}

/// A zero-copy view of one whole CommitLog message record (layout in the module docs).
/// [`RecordView::parse`] checks every length against the bytes once; the accessors then
/// read fields in place. The store's decoders — full decode, recovery's check, the
/// dispatcher's head, the broker's hints — all read records through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
    magic: i32,
    sys_flag: i32,
    store_ts_pos: usize,
    body_pos: usize,
    body_len: usize,
    topic_pos: usize,
    topic_len: usize,
    props_pos: usize,
    props_len: usize,
}

impl<'a> RecordView<'a> {
    /// Checks the structure of `rec`: the size field equals `rec.len()`, a message magic
    /// code, and every length (body, topic, properties) ending exactly at the end. The
    /// body CRC is not checked here ([`RecordView::body_crc_matches`]).
    ///
    /// # Errors
    /// [`RecordError::Corrupt`] naming what does not add up.
    pub fn parse(rec: &'a [u8]) -> Result<Self, RecordError> {
        let short = RecordError::Corrupt("field runs past the record");
        let i32_at = |p: usize| be::<4>(rec, p).map(i32::from_be_bytes).ok_or(short.clone());
        let total = i32_at(0)?;
        if usize::try_from(total).ok() != Some(rec.len()) {
            return Err(RecordError::Corrupt("size field does not match"));
        }
        let magic = i32_at(4)?;
        if magic != MESSAGE_MAGIC_CODE_V1 && magic != MESSAGE_MAGIC_CODE_V2 {
            return Err(RecordError::Corrupt("bad magic code"));
        }
        let sys = i32_at(POS_SYS_FLAG)?;
        let host_len = |v6: bool| if v6 { 20 } else { 8 };
        let store_ts_pos = POS_BORN_HOST + host_len(sys & sys_flag::BORNHOST_V6 != 0);
        let body_len_pos = store_ts_pos + 8 + host_len(sys & sys_flag::STOREHOST_V6 != 0) + 4 + 8;
        let body_len = usize::try_from(i32_at(body_len_pos)?)
            .map_err(|_| RecordError::Corrupt("negative body length"))?;
        let body_pos = body_len_pos + 4;
        let mut p = body_pos.checked_add(body_len).ok_or(short.clone())?;
        let topic_len = if magic == MESSAGE_MAGIC_CODE_V2 {
            let l = be::<2>(rec, p)
                .map(i16::from_be_bytes)
                .ok_or(short.clone())?;
            p += 2;
            usize::try_from(l).map_err(|_| RecordError::Corrupt("negative topic length"))?
        } else {
            let l = rec.get(p).copied().ok_or(short.clone())?;
            p += 1;
            usize::from(l)
        };
        let topic_pos = p;
        p = p.checked_add(topic_len).ok_or(short.clone())?;
        let props_len = be::<2>(rec, p)
            .map(i16::from_be_bytes)
            .ok_or(short.clone())?;
        let props_len = usize::try_from(props_len)
            .map_err(|_| RecordError::Corrupt("negative properties length"))?;
        let props_pos = p + 2;
        match props_pos.checked_add(props_len) {
            Some(end) if end == rec.len() => {}
            Some(end) if end < rec.len() => {
                return Err(RecordError::Corrupt("trailing bytes after properties"))
            }
            _ => return Err(short),
        }
        let view = RecordView {
            bytes: rec,
            magic,
            sys_flag: sys,
            store_ts_pos,
            body_pos,
            body_len,
            topic_pos,
            topic_len,
            props_pos,
            props_len,
        };
        std::str::from_utf8(view.topic_bytes())
            .map_err(|_| RecordError::Corrupt("topic is not UTF-8"))?;
        Ok(view)
    }

    fn i32_at(&self, p: usize) -> i32 {
        be::<4>(self.bytes, p).map_or(0, i32::from_be_bytes)
    }

    fn i64_at(&self, p: usize) -> i64 {
        be::<8>(self.bytes, p).map_or(0, i64::from_be_bytes)
    }

    fn host_at(&self, p: usize, v6: bool) -> std::net::SocketAddr {
        use std::net::{IpAddr, SocketAddr};
        let (ip, port_pos) = if v6 {
            (be::<16>(self.bytes, p).map(IpAddr::from), p + 16)
        } else {
            (be::<4>(self.bytes, p).map(IpAddr::from), p + 4)
        };
        let port = u16::try_from(self.i32_at(port_pos)).unwrap_or(0);
        SocketAddr::new(ip.unwrap_or(IpAddr::from([0u8; 4])), port)
    }

    /// The record's bytes.
    #[must_use]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// TOTALSIZE.
    #[must_use]
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
    /// MAGICCODE (V1 or V2).
    #[must_use]
    pub fn magic(&self) -> i32 {
        self.magic
    }
    /// BODYCRC.
    #[must_use]
    pub fn body_crc(&self) -> i32 {
        self.i32_at(8)
    }
    /// QUEUEID.
    #[must_use]
    pub fn queue_id(&self) -> i32 {
        self.i32_at(12)
    }
    /// FLAG.
    #[must_use]
    pub fn flag(&self) -> i32 {
        self.i32_at(16)
    }
    /// QUEUEOFFSET.
    #[must_use]
    pub fn queue_offset(&self) -> i64 {
        self.i64_at(POS_QUEUE_OFFSET)
    }
    /// PHYSICALOFFSET.
    #[must_use]
    pub fn physical_offset(&self) -> i64 {
        self.i64_at(POS_PHYSICAL_OFFSET)
    }
    /// SYSFLAG.
    #[must_use]
    pub fn sys_flag(&self) -> i32 {
        self.sys_flag
    }
    /// BORNTIMESTAMP.
    #[must_use]
    pub fn born_timestamp(&self) -> i64 {
        self.i64_at(POS_BORN_TIMESTAMP)
    }
    /// BORNHOST.
    #[must_use]
    pub fn born_host(&self) -> std::net::SocketAddr {
        self.host_at(POS_BORN_HOST, self.sys_flag & sys_flag::BORNHOST_V6 != 0)
    }
    /// STORETIMESTAMP.
    #[must_use]
    pub fn store_timestamp(&self) -> i64 {
        self.i64_at(self.store_ts_pos)
    }
    /// STOREHOSTADDRESS.
    #[must_use]
    pub fn store_host(&self) -> std::net::SocketAddr {
        self.host_at(
            self.store_ts_pos + 8,
            self.sys_flag & sys_flag::STOREHOST_V6 != 0,
        )
    }
    /// RECONSUMETIMES.
    #[must_use]
    pub fn reconsume_times(&self) -> i32 {
        self.i32_at(self.body_pos - 16)
    }
    /// Prepared transaction offset.
    #[must_use]
    pub fn prepared_transaction_offset(&self) -> i64 {
        self.i64_at(self.body_pos - 12)
    }
    /// Where the body sits in the record.
    #[must_use]
    pub fn body_range(&self) -> std::ops::Range<usize> {
        self.body_pos..self.body_pos + self.body_len
    }
    /// BODY.
    #[must_use]
    pub fn body(&self) -> &'a [u8] {
        self.bytes.get(self.body_range()).unwrap_or_default()
    }
    /// Whether BODYCRC matches the body.
    #[must_use]
    pub fn body_crc_matches(&self) -> bool {
        body_crc(self.body()) == self.body_crc()
    }
    fn topic_bytes(&self) -> &'a [u8] {
        self.bytes
            .get(self.topic_pos..self.topic_pos + self.topic_len)
            .unwrap_or_default()
    }
    /// TOPIC (checked to be UTF-8 by `parse`).
    #[must_use]
    pub fn topic(&self) -> &'a str {
        std::str::from_utf8(self.topic_bytes()).unwrap_or_default()
    }
    /// PROPERTIES as bytes.
    #[must_use]
    pub fn properties_bytes(&self) -> &'a [u8] {
        self.bytes
            .get(self.props_pos..self.props_pos + self.props_len)
            .unwrap_or_default()
    }
    /// PROPERTIES as text (empty when not UTF-8).
    #[must_use]
    pub fn properties(&self) -> &'a str {
        std::str::from_utf8(self.properties_bytes()).unwrap_or_default()
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
