//! The stored message record: RocketMQ's CommitLog layout, byte for byte.
//!
//! ```text
//! [total:4][magic:4][body_crc:4][queue_id:4][flag:4][queue_offset:8][physical_offset:8]
//! [sys_flag:4][born_ts:8][born_host:8|20][store_ts:8][store_host:8|20][reconsume_times:4]
//! [prepared_tx_offset:8][body_len:4][body][topic_len:1 (V1) | 2 (V2)][topic][props_len:2][props]
//! ```
//!
//! Encoding happens outside the writer's critical section; the writer only patches the
//! three fields it assigns (queue offset, physical offset, store timestamp) in place.
//! The same bytes go into PULL bodies and the HA stream.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;

use super::format::{
    body_crc, property, sys_flag, RecordView, BLANK_MAGIC_CODE, MESSAGE_MAGIC_CODE_V1,
    MESSAGE_MAGIC_CODE_V2,
};

pub use super::format::{POS_BORN_HOST, POS_PHYSICAL_OFFSET, POS_QUEUE_OFFSET, POS_SYS_FLAG};
/// Largest topic a V1 record can carry; longer topics use V2.
pub const MAX_V1_TOPIC_LEN: usize = 127;
/// Largest property string (its length is an i16).
pub const MAX_PROPERTIES_LEN: usize = i16::MAX as usize;

/// Why a record could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The topic is longer than a V2 record can carry.
    #[error("topic is {len} bytes; at most {max} fit in a record")]
    TopicTooLong {
        /// Topic length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The property string does not fit its i16 length.
    #[error("properties are {len} bytes; at most {max} fit in a record")]
    PropertiesTooLong {
        /// Property string length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The record would exceed `maxMessageSize` (or i32).
    #[error("message is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Encoded record length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The bytes do not hold a valid record.
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
}

/// A message handed to the store, before it has offsets and a store time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageToStore {
    /// Topic.
    pub topic: String,
    /// Queue id within the topic.
    pub queue_id: i32,
    /// Application flag, stored verbatim.
    pub flag: i32,
    /// `MessageSysFlag` bits; the host IPv6 bits are derived from the addresses.
    pub sys_flag: i32,
    /// Producer timestamp, ms.
    pub born_timestamp: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// This broker's address.
    pub store_host: SocketAddr,
    /// Times the message was consumed and sent back.
    pub reconsume_times: i32,
    /// Prepared transaction offset (0 for ordinary messages).
    pub prepared_transaction_offset: i64,
    /// Body, as sent by the producer (possibly compressed).
    pub body: Bytes,
    /// Encoded property string (`name\x01value\x02...`).
    pub properties: String,
}

impl Default for MessageToStore {
    fn default() -> Self {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        MessageToStore {
            topic: String::new(),
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: local,
            store_host: local,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::new(),
            properties: String::new(),
        }
    }
}

fn host_len(addr: &SocketAddr) -> usize {
    match addr.ip() {
        IpAddr::V4(_) => 8,
        IpAddr::V6(_) => 20,
    }
}

fn put_host(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&i32::from(addr.port()).to_be_bytes());
}

/// A record encoded except for the fields the writer assigns.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    /// The record bytes.
    pub bytes: Vec<u8>,
    /// Where STORETIMESTAMP sits (depends on the born host's width).
    pub store_timestamp_pos: usize,
}

impl EncodedRecord {
    /// Sets the fields assigned in the writer's critical section.
    pub fn assign(&mut self, queue_offset: i64, physical_offset: i64, store_timestamp: i64) {
        let b = &mut self.bytes;
        b[POS_QUEUE_OFFSET..POS_QUEUE_OFFSET + 8].copy_from_slice(&queue_offset.to_be_bytes());
        b[POS_PHYSICAL_OFFSET..POS_PHYSICAL_OFFSET + 8]
            .copy_from_slice(&physical_offset.to_be_bytes());
        let p = self.store_timestamp_pos;
        b[p..p + 8].copy_from_slice(&store_timestamp.to_be_bytes());
    }

    /// Record length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true for an encoded record; present for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Encodes a message into the stored layout, with zeroed queue offset, physical
/// offset and store timestamp.
///
/// # Errors
/// [`RecordError`] when the topic or properties do not fit, or the record exceeds
/// `max_message_size`.
pub fn encode_record(
    msg: &MessageToStore,
    max_message_size: usize,
) -> Result<EncodedRecord, RecordError> {
    let topic = msg.topic.as_bytes();
    if topic.len() > i16::MAX as usize {
        return Err(RecordError::TopicTooLong {
            len: topic.len(),
            max: i16::MAX as usize,
        });
    }
    let props = msg.properties.as_bytes();
    if props.len() > MAX_PROPERTIES_LEN {
        return Err(RecordError::PropertiesTooLong {
            len: props.len(),
            max: MAX_PROPERTIES_LEN,
        });
    }
    let v2 = topic.len() > MAX_V1_TOPIC_LEN;
    let born_len = host_len(&msg.born_host);
    let store_len = host_len(&msg.store_host);
    let total = 4
        + 4
        + 4
        + 4
        + 4
        + 8
        + 8
        + 4
        + 8
        + born_len
        + 8
        + store_len
        + 4
        + 8
        + 4
        + msg.body.len()
        + if v2 { 2 } else { 1 }
        + topic.len()
        + 2
        + props.len();
    if total > max_message_size.min(i32::MAX as usize) {
        return Err(RecordError::TooLarge {
            len: total,
            max: max_message_size,
        });
    }
    let mut sys = msg.sys_flag & !(sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6);
    if born_len == 20 {
        sys |= sys_flag::BORNHOST_V6;
    }
    if store_len == 20 {
        sys |= sys_flag::STOREHOST_V6;
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as i32).to_be_bytes());
    let magic = if v2 {
        MESSAGE_MAGIC_CODE_V2
    } else {
        MESSAGE_MAGIC_CODE_V1
    };
    out.extend_from_slice(&magic.to_be_bytes());
    out.extend_from_slice(&body_crc(&msg.body).to_be_bytes());
    out.extend_from_slice(&msg.queue_id.to_be_bytes());
    out.extend_from_slice(&msg.flag.to_be_bytes());
    out.extend_from_slice(&0i64.to_be_bytes()); // queue offset, assigned later
    out.extend_from_slice(&0i64.to_be_bytes()); // physical offset, assigned later
    out.extend_from_slice(&sys.to_be_bytes());
    out.extend_from_slice(&msg.born_timestamp.to_be_bytes());
    put_host(&mut out, &msg.born_host);
    let store_timestamp_pos = out.len();
    out.extend_from_slice(&0i64.to_be_bytes()); // store timestamp, assigned later
    put_host(&mut out, &msg.store_host);
    out.extend_from_slice(&msg.reconsume_times.to_be_bytes());
    out.extend_from_slice(&msg.prepared_transaction_offset.to_be_bytes());
    out.extend_from_slice(&(msg.body.len() as i32).to_be_bytes());
    out.extend_from_slice(&msg.body);
    if v2 {
        out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    } else {
        out.push(topic.len() as u8);
    }
    out.extend_from_slice(topic);
    out.extend_from_slice(&(props.len() as i16).to_be_bytes());
    out.extend_from_slice(props);
    debug_assert_eq!(out.len(), total);
    Ok(EncodedRecord {
        bytes: out,
        store_timestamp_pos,
    })
}

/// A decoded stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Record length.
    pub store_size: i32,
    /// Stored body CRC.
    pub body_crc: i32,
    /// Queue id.
    pub queue_id: i32,
    /// Application flag.
    pub flag: i32,
    /// Logical offset in the queue.
    pub queue_offset: i64,
    /// CommitLog offset of the record.
    pub physical_offset: i64,
    /// `MessageSysFlag` bits.
    pub sys_flag: i32,
    /// Producer time, ms.
    pub born_timestamp: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Store time, ms.
    pub store_timestamp: i64,
    /// Broker address.
    pub store_host: SocketAddr,
    /// Reconsume count.
    pub reconsume_times: i32,
    /// Prepared transaction offset.
    pub prepared_transaction_offset: i64,
    /// Body.
    pub body: Bytes,
    /// Topic.
    pub topic: String,
    /// Raw property string.
    pub properties: String,
}

impl StoredMessage {
    /// Looks up one property.
    pub fn property(&self, name: &str) -> Option<String> {
        parse_properties(&self.properties).remove(name)
    }

    /// The single tag, if any.
    pub fn tag(&self) -> Option<String> {
        self.property(property::TAGS)
    }

    /// The message as one to store again: same topic, queue, body, flags, times, hosts
    /// and properties (the caller changes what moves).
    #[must_use]
    pub fn to_store(&self) -> MessageToStore {
        MessageToStore {
            topic: self.topic.clone(),
            queue_id: self.queue_id,
            flag: self.flag,
            sys_flag: self.sys_flag,
            born_timestamp: self.born_timestamp,
            born_host: self.born_host,
            store_host: self.store_host,
            reconsume_times: self.reconsume_times,
            prepared_transaction_offset: self.prepared_transaction_offset,
            body: self.body.clone(),
            properties: self.properties.clone(),
        }
    }
}

/// A bounds-checked big-endian reader over a record.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(RecordError::Corrupt("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(RecordError::Corrupt("field runs past the record"))?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
}

/// What sits at a position of the CommitLog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCheck {
    /// A whole, valid record of this size.
    Message {
        /// Record size.
        size: usize,
    },
    /// The end-of-segment filler; the segment's remaining bytes.
    Blank {
        /// Bytes from here to the end of the segment.
        size: usize,
    },
    /// Zero length: no more data was written here.
    End,
}

/// Reads the 4-byte length and magic at the start of `buf` and validates the record.
///
/// `buf` must extend to the end of the segment (or of the bytes at hand). With
/// `check_crc` the body CRC is verified too. `expected_offset`, when given, must equal
/// the record's PHYSICALOFFSET field, which rejects stale bytes left from older data.
///
/// # Errors
/// [`RecordError::Corrupt`] for a bad magic, an impossible size, a record that runs
/// past `buf`, a CRC mismatch or a wrong physical offset.
pub fn check_record(
    buf: &[u8],
    check_crc: bool,
    expected_offset: Option<i64>,
) -> Result<RecordCheck, RecordError> {
    let mut r = Reader { buf, pos: 0 };
    let total = r.i32()?;
    if total == 0 {
        return Ok(RecordCheck::End);
    }
    let magic = r.i32()?;
    if magic == BLANK_MAGIC_CODE {
        let size = usize::try_from(total).map_err(|_| RecordError::Corrupt("negative size"))?;
        if size != buf.len() {
            return Err(RecordError::Corrupt(
                "filler does not reach the segment end",
            ));
        }
        return Ok(RecordCheck::Blank { size });
    }
    if magic != MESSAGE_MAGIC_CODE_V1 && magic != MESSAGE_MAGIC_CODE_V2 {
        return Err(RecordError::Corrupt("bad magic code"));
    }
    let size = usize::try_from(total).map_err(|_| RecordError::Corrupt("negative size"))?;
    let record = buf
        .get(..size)
        .ok_or(RecordError::Corrupt("record runs past the written data"))?;
    // Checked in place: no copy of the body, even when the CRC is verified (recovery).
    let view = RecordView::parse(record)?;
    if let Some(expected) = expected_offset {
        if view.physical_offset() != expected {
            return Err(RecordError::Corrupt("physical offset field does not match"));
        }
    }
    if check_crc && !view.body_crc_matches() {
        return Err(RecordError::Corrupt("body CRC mismatch"));
    }
    Ok(RecordCheck::Message { size })
}

/// Decodes one whole record. The body is a zero-copy slice of `record`.
///
/// # Errors
/// [`RecordError::Corrupt`] when the bytes are not a valid record.
pub fn decode_record(record: &Bytes) -> Result<StoredMessage, RecordError> {
    let v = RecordView::parse(record)?;
    Ok(StoredMessage {
        store_size: i32::try_from(v.size()).unwrap_or(i32::MAX),
        body_crc: v.body_crc(),
        queue_id: v.queue_id(),
        flag: v.flag(),
        queue_offset: v.queue_offset(),
        physical_offset: v.physical_offset(),
        sys_flag: v.sys_flag(),
        born_timestamp: v.born_timestamp(),
        born_host: v.born_host(),
        store_timestamp: v.store_timestamp(),
        store_host: v.store_host(),
        reconsume_times: v.reconsume_times(),
        prepared_transaction_offset: v.prepared_transaction_offset(),
        body: record.slice(v.body_range()),
        topic: v.topic().to_owned(),
        properties: String::from_utf8_lossy(v.properties_bytes()).into_owned(),
    })
}

/// Parses a property string (`name\x01value\x02...`) the way RocketMQ does: segments
/// without an inner `\x01` are ignored.
pub fn parse_properties(s: &str) -> BTreeMap<String, String> {
    s.split(property::PROPERTY_SEPARATOR)
        .filter_map(|seg| {
            let (k, v) = seg.split_once(property::NAME_VALUE_SEPARATOR)?;
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Encodes properties with the trailing separator RocketMQ writes.
pub fn encode_properties<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in props {
        out.push_str(k);
        out.push(property::NAME_VALUE_SEPARATOR);
        out.push_str(v);
        out.push(property::PROPERTY_SEPARATOR);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn sample() -> MessageToStore {
        MessageToStore {
            topic: "T".into(),
            queue_id: 1,
            flag: 2,
            sys_flag: 0,
            born_timestamp: 3,
            born_host: "10.0.0.1:4".parse().unwrap(),
            store_host: "10.0.0.2:5".parse().unwrap(),
            reconsume_times: 6,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"hi"),
            properties: encode_properties([("TAGS", "A")]),
        }
    }

    /// One record written out by hand from the fact sheet (§6), not by our encoder.
    #[test]
    fn golden_record_bytes() {
        #[rustfmt::skip]
        let golden: Vec<u8> = vec![
            0, 0, 0, 101,                         // TOTALSIZE: 84 fixed + 6 body + 2 topic + 9 props
            0xDA, 0xA3, 0x20, 0xA7,               // MAGICCODE V1
            0x58, 0x93, 0x2A, 0xAC,               // BODYCRC: crc32("hi") 0xD8932AAC & 0x7FFFFFFF
            0, 0, 0, 1,                           // QUEUEID
            0, 0, 0, 2,                           // FLAG
            0, 0, 0, 0, 0, 0, 0, 7,               // QUEUEOFFSET
            0, 0, 0, 0, 0, 0, 0x10, 0,            // PHYSICALOFFSET 4096
            0, 0, 0, 0,                           // SYSFLAG
            0, 0, 0, 0, 0, 0, 0, 3,               // BORNTIMESTAMP
            10, 0, 0, 1, 0, 0, 0, 4,              // BORNHOST 10.0.0.1:4
            0, 0, 0, 0, 0, 0, 0, 9,               // STORETIMESTAMP
            10, 0, 0, 2, 0, 0, 0, 5,              // STOREHOSTADDRESS 10.0.0.2:5
            0, 0, 0, 6,                           // RECONSUMETIMES
            0, 0, 0, 0, 0, 0, 0, 0,               // PREPARED TRANSACTION OFFSET
            0, 0, 0, 2, b'h', b'i',               // BODY
            1, b'T',                              // TOPIC (V1: one length byte)
            0, 7, b'T', b'A', b'G', b'S', 1, b'A', 2, // PROPERTIES
        ];
        assert_eq!(golden.len(), 101);
        let mut enc = encode_record(&sample(), 1 << 20).unwrap();
        enc.assign(7, 4096, 9);
        assert_eq!(enc.bytes, golden);
        assert_eq!(enc.store_timestamp_pos, 56);
        let dec = decode_record(&Bytes::from(golden.clone())).unwrap();
        assert_eq!(dec.queue_offset, 7);
        assert_eq!(dec.physical_offset, 4096);
        assert_eq!(dec.store_timestamp, 9);
        assert_eq!(dec.tag().as_deref(), Some("A"));
        assert_eq!(
            check_record(&golden, true, Some(4096)),
            Ok(RecordCheck::Message { size: 101 })
        );
    }

    #[test]
    fn long_topics_use_v2_and_ipv6_sets_flags() {
        let mut m = sample();
        m.topic = "x".repeat(200);
        m.born_host = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9);
        m.store_host = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 10);
        let enc = encode_record(&m, 1 << 20).unwrap();
        assert_eq!(&enc.bytes[4..8], &MESSAGE_MAGIC_CODE_V2.to_be_bytes());
        let dec = decode_record(&Bytes::from(enc.bytes)).unwrap();
        assert_eq!(dec.topic, m.topic);
        assert_eq!(dec.born_host, m.born_host);
        assert_eq!(dec.store_host, m.store_host);
        assert_eq!(
            dec.sys_flag & (sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6),
            0x30
        );
    }

    #[test]
    fn oversized_and_bad_fields_are_refused() {
        let mut m = sample();
        m.body = Bytes::from(vec![0u8; 2000]);
        assert!(matches!(
            encode_record(&m, 1000),
            Err(RecordError::TooLarge { .. })
        ));
        m.body = Bytes::new();
        m.properties = "k\u{1}".to_string() + &"v".repeat(40_000);
        assert!(matches!(
            encode_record(&m, 1 << 20),
            Err(RecordError::PropertiesTooLong { .. })
        ));
    }

    #[test]
    fn every_prefix_is_rejected_not_panicking() {
        let enc = encode_record(&sample(), 1 << 20).unwrap();
        for cut in 0..enc.bytes.len() {
            let prefix = &enc.bytes[..cut];
            assert!(check_record(prefix, true, None).is_err() || cut < 4);
            assert!(decode_record(&Bytes::copy_from_slice(prefix)).is_err());
        }
    }

    #[test]
    fn crc_and_offset_checks() {
        let mut enc = encode_record(&sample(), 1 << 20).unwrap();
        enc.assign(0, 64, 1);
        let mut bad = enc.bytes.clone();
        let body_at = bad.len() - 9 - 2 - 2;
        bad[body_at] ^= 0xFF;
        assert!(check_record(&bad, true, None).is_err());
        assert!(check_record(&bad, false, None).is_ok());
        assert!(check_record(&enc.bytes, true, Some(65)).is_err());
    }

    #[test]
    fn blank_filler_and_end() {
        let mut seg = vec![0u8; 32];
        assert_eq!(check_record(&seg, true, None), Ok(RecordCheck::End));
        seg[0..4].copy_from_slice(&32i32.to_be_bytes());
        seg[4..8].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
        assert_eq!(
            check_record(&seg, true, None),
            Ok(RecordCheck::Blank { size: 32 })
        );
        assert!(check_record(&seg[..16], true, None).is_err());
    }

    #[test]
    fn properties_parse_like_rocketmq() {
        let p = parse_properties("KEYS\u{1}a b\u{2}x\u{2}\u{1}v\u{2}TAGS\u{1}T\u{2}");
        assert_eq!(p.get("KEYS").map(String::as_str), Some("a b"));
        assert_eq!(p.get("TAGS").map(String::as_str), Some("T"));
        assert_eq!(p.len(), 2);
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            topic in "[A-Za-z0-9_%-]{1,300}",
            queue_id in 0i32..1024,
            flag in any::<i32>(),
            born in arb_addr(),
            store in arb_addr(),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            props in proptest::collection::btree_map("[A-Za-z_]{1,12}", "[^\u{1}\u{2}]{0,40}", 0..6),
            qo in 0i64..i64::MAX, po in 0i64..i64::MAX, ts in any::<i64>(),
        ) {
            let properties = encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let m = MessageToStore {
                topic, queue_id, flag, sys_flag: 0, born_timestamp: ts, born_host: born,
                store_host: store, reconsume_times: 3, prepared_transaction_offset: 0,
                body: Bytes::from(body), properties,
            };
            let mut enc = encode_record(&m, 1 << 20).unwrap();
            enc.assign(qo, po, ts);
            prop_assert_eq!(
                check_record(&enc.bytes, true, Some(po)),
                Ok(RecordCheck::Message { size: enc.len() })
            );
            let d = decode_record(&Bytes::from(enc.bytes)).unwrap();
            prop_assert_eq!(&d.topic, &m.topic);
            prop_assert_eq!(d.queue_id, m.queue_id);
            prop_assert_eq!(d.flag, m.flag);
            prop_assert_eq!(d.born_host, m.born_host);
            prop_assert_eq!(d.store_host, m.store_host);
            prop_assert_eq!(&d.body, &m.body);
            prop_assert_eq!(d.queue_offset, qo);
            prop_assert_eq!(d.physical_offset, po);
            prop_assert_eq!(d.store_timestamp, ts);
            prop_assert_eq!(parse_properties(&d.properties), props);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = check_record(&buf, true, None);
            let _ = decode_record(&Bytes::from(buf));
        }

        /// Structured fuzzing of a CommitLog record: a valid record with one of its
        /// length or flag fields overwritten by an arbitrary value, a flipped byte, and a
        /// cut, is checked and decoded without a panic; a cut record is never accepted.
        #[test]
        fn mutated_records_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            topic in "[A-Za-z0-9]{1,40}",
            v6 in any::<bool>(),
            field in 0usize..64, value in any::<i32>(),
            flip in any::<proptest::sample::Index>(), bit in 0u8..8,
            cut in any::<proptest::sample::Index>(),
        ) {
            let host: SocketAddr = if v6 { "[::1]:10911".parse().unwrap() } else { "127.0.0.1:10911".parse().unwrap() };
            let m = MessageToStore {
                topic, queue_id: 1, flag: 0, sys_flag: 0, born_timestamp: 1, born_host: host,
                store_host: host, reconsume_times: 0, prepared_transaction_offset: 0,
                body: Bytes::from(body), properties: "KEYS\u{1}k\u{2}".into(),
            };
            let mut enc = encode_record(&m, 1 << 20).unwrap();
            enc.assign(7, 4096, 1);
            let good = enc.bytes.clone();
            // Overwrite one 4-byte-aligned field (sizes, magic, flags, lengths).
            let mut bad = good.clone();
            let at = (field * 4).min(bad.len().saturating_sub(4));
            bad[at..at + 4].copy_from_slice(&value.to_be_bytes());
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            let _ = check_record(&bad, true, Some(4096));
            let _ = decode_record(&Bytes::from(bad));
            let n = cut.index(good.len());
            prop_assert!(check_record(&good[..n], true, Some(4096)).is_err());
            let _ = decode_record(&Bytes::copy_from_slice(&good[..n]));
        }
    }
}
