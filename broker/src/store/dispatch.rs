//! Dispatch: turning CommitLog records into ConsumeQueue and IndexFile entries.
//!
//! The dispatcher follows the CommitLog from its reput offset to the published max
//! offset. Writing a ConsumeQueue entry at the record's own queue offset makes
//! re-dispatch after a crash idempotent.

use super::format::{property, sys_flag, tags_code, CqEntry, MESSAGE_MAGIC_CODE_V2};
use super::message::POS_BORN_HOST;

/// The fields of a record the dispatcher and the queue-offset table need, borrowed from
/// the record bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHead<'a> {
    /// Record size.
    pub size: usize,
    /// Queue id.
    pub queue_id: i32,
    /// Logical offset in its queue.
    pub queue_offset: i64,
    /// CommitLog offset.
    pub physical_offset: i64,
    /// `MessageSysFlag` bits.
    pub sys_flag: i32,
    /// Store time, ms.
    pub store_timestamp: i64,
    /// Topic.
    pub topic: &'a str,
    /// Raw property string.
    pub properties: &'a str,
}

fn be_i32(b: &[u8], p: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(p..p + 4)?.try_into().ok()?))
}
fn be_i64(b: &[u8], p: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(p..p + 8)?.try_into().ok()?))
}
fn be_i16(b: &[u8], p: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(p..p + 2)?.try_into().ok()?))
}

impl<'a> RecordHead<'a> {
    /// Parses a whole, already validated record; `None` when the bytes do not add up.
    pub fn parse(rec: &'a [u8]) -> Option<Self> {
        let size = usize::try_from(be_i32(rec, 0)?).ok()?;
        let magic = be_i32(rec, 4)?;
        let queue_id = be_i32(rec, 12)?;
        let queue_offset = be_i64(rec, 20)?;
        let physical_offset = be_i64(rec, 28)?;
        let sys = be_i32(rec, 36)?;
        let born = if sys & sys_flag::BORNHOST_V6 != 0 {
            20
        } else {
            8
        };
        let store = if sys & sys_flag::STOREHOST_V6 != 0 {
            20
        } else {
            8
        };
        let ts_pos = POS_BORN_HOST + born;
        let store_timestamp = be_i64(rec, ts_pos)?;
        let body_len_pos = ts_pos + 8 + store + 4 + 8;
        let body_len = usize::try_from(be_i32(rec, body_len_pos)?).ok()?;
        let mut p = body_len_pos.checked_add(4)?.checked_add(body_len)?;
        let topic_len = if magic == MESSAGE_MAGIC_CODE_V2 {
            let l = usize::try_from(be_i16(rec, p)?).ok()?;
            p += 2;
            l
        } else {
            let l = usize::from(*rec.get(p)?);
            p += 1;
            l
        };
        let topic = std::str::from_utf8(rec.get(p..p.checked_add(topic_len)?)?).ok()?;
        p += topic_len;
        let props_len = usize::try_from(be_i16(rec, p)?).ok()?;
        p += 2;
        let properties = std::str::from_utf8(rec.get(p..p.checked_add(props_len)?)?).unwrap_or("");
        Some(RecordHead {
            size,
            queue_id,
            queue_offset,
            physical_offset,
            sys_flag: sys,
            store_timestamp,
            topic,
            properties,
        })
    }

    /// Prepared and rollback transaction records stay out of the ConsumeQueue.
    pub fn is_dispatched(&self) -> bool {
        let t = self.sys_flag & sys_flag::TRANSACTION_TYPE_MASK;
        t != sys_flag::TRANSACTION_PREPARED && t != sys_flag::TRANSACTION_ROLLBACK
    }

    /// Rollback records are not indexed.
    pub fn is_indexed(&self) -> bool {
        self.sys_flag & sys_flag::TRANSACTION_TYPE_MASK != sys_flag::TRANSACTION_ROLLBACK
    }

    /// One property, without allocating.
    pub fn property(&self, name: &str) -> Option<&'a str> {
        find_property(self.properties, name)
    }

    /// The ConsumeQueue entry for this record.
    pub fn cq_entry(&self) -> CqEntry {
        CqEntry {
            commitlog_offset: self.physical_offset,
            size: self.size as i32,
            tags_code: tags_code(self.property(property::TAGS)),
        }
    }

    /// The index keys: each entry of `KEYS` and the `UNIQ_KEY`.
    pub fn index_keys(&self) -> impl Iterator<Item = &'a str> {
        self.property(property::KEYS)
            .into_iter()
            .flat_map(|k| k.split(' '))
            .chain(self.property(property::UNIQ_KEY))
            .filter(|k| !k.is_empty())
    }
}

/// Finds one property in an encoded property string.
pub fn find_property<'a>(props: &'a str, name: &str) -> Option<&'a str> {
    props
        .split(property::PROPERTY_SEPARATOR)
        .filter_map(|seg| seg.split_once(property::NAME_VALUE_SEPARATOR))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::message::{encode_properties, encode_record, MessageToStore};

    #[test]
    fn head_matches_full_decode() {
        let m = MessageToStore {
            topic: "Orders".into(),
            queue_id: 5,
            properties: encode_properties([
                ("TAGS", "TagA"),
                ("KEYS", "k1 k2"),
                ("UNIQ_KEY", "U1"),
            ]),
            body: bytes::Bytes::from_static(b"body"),
            ..MessageToStore::default()
        };
        let mut enc = encode_record(&m, 1 << 20).unwrap();
        enc.assign(9, 1000, 77);
        let h = RecordHead::parse(&enc.bytes).unwrap();
        assert_eq!(h.topic, "Orders");
        assert_eq!(
            (h.queue_id, h.queue_offset, h.physical_offset),
            (5, 9, 1000)
        );
        assert_eq!(h.store_timestamp, 77);
        assert_eq!(h.cq_entry().tags_code, 2_598_919);
        assert_eq!(h.index_keys().collect::<Vec<_>>(), vec!["k1", "k2", "U1"]);
        assert!(h.is_dispatched());
        for cut in 0..enc.bytes.len() {
            let _ = RecordHead::parse(&enc.bytes[..cut]);
        }
    }
}
