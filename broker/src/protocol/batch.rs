//! The body of SEND_BATCH_MESSAGE (`MessageBatch.encode`): messages back to back, each
//!
//! ```text
//! [total:4][magic:4][body_crc:4][flag:4][body_len:4][body][properties_len:2][properties]
//! ```
//!
//! with `total = 20 + body_len + 2 + properties_len`. Java writes magic and CRC as 0.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// The message flag.
    pub flag: i32,
    /// The body.
    pub body: Bytes,
    /// Properties, `key\u{1}value\u{2}` pairs.
    pub properties: String,
}

/// Encodes `entries` as a batch body.
///
/// # Errors
/// A body or properties too long for their length fields.
pub fn encode_batch(entries: &[BatchEntry]) -> Result<Bytes, String> {
    let mut b = BytesMut::new();
    for m in entries {
        let props = m.properties.as_bytes();
        let props_len =
            i16::try_from(props.len()).map_err(|_| "batch properties longer than 32767 bytes")?;
        let body_len = i32::try_from(m.body.len()).map_err(|_| "batch body too long")?;
        let total = 20usize
            .checked_add(m.body.len())
            .and_then(|t| t.checked_add(2 + props.len()))
            .and_then(|t| i32::try_from(t).ok())
            .ok_or("batch entry too long")?;
        b.put_i32(total);
        b.put_i32(0);
        b.put_i32(0);
        b.put_i32(m.flag);
        b.put_i32(body_len);
        b.put_slice(&m.body);
        b.put_i16(props_len);
        b.put_slice(props);
    }
    Ok(b.freeze())
}

/// Splits a SEND_BATCH_MESSAGE body into its messages.
///
/// # Errors
/// A truncated entry, lengths that run past the body or disagree with `total`,
/// properties that are not UTF-8.
pub fn decode_batch(mut buf: Bytes) -> Result<Vec<BatchEntry>, String> {
    let mut out = Vec::new();
    while buf.has_remaining() {
        if buf.remaining() < 20 {
            return Err("truncated batch entry".into());
        }
        let total = buf.get_i32();
        let _magic = buf.get_i32();
        let _crc = buf.get_i32();
        let flag = buf.get_i32();
        let body_len = usize::try_from(buf.get_i32()).map_err(|_| "negative body length")?;
        if buf.remaining() < body_len + 2 {
            return Err("batch body runs past the frame".into());
        }
        let body = buf.split_to(body_len);
        let props_len = usize::try_from(buf.get_i16()).map_err(|_| "negative properties length")?;
        if buf.remaining() < props_len {
            return Err("batch properties run past the frame".into());
        }
        let props = String::from_utf8(buf.split_to(props_len).to_vec())
            .map_err(|_| "properties are not UTF-8")?;
        if usize::try_from(total).ok() != Some(20 + body_len + 2 + props_len) {
            return Err("batch entry size does not match its fields".into());
        }
        out.push(BatchEntry {
            flag,
            body,
            properties: props,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_decode_and_reject_lies() {
        let mut body = Vec::new();
        for (i, b) in [b"one".as_slice(), b"three"].iter().enumerate() {
            let props = format!("KEYS\u{1}k{i}\u{2}");
            body.extend_from_slice(&((20 + b.len() + 2 + props.len()) as i32).to_be_bytes());
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&(i as i32).to_be_bytes());
            body.extend_from_slice(&(b.len() as i32).to_be_bytes());
            body.extend_from_slice(b);
            body.extend_from_slice(&(props.len() as i16).to_be_bytes());
            body.extend_from_slice(props.as_bytes());
        }
        let items = decode_batch(Bytes::from(body.clone())).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(&items[1].body[..], b"three");
        for cut in 1..body.len() {
            let _ = decode_batch(Bytes::copy_from_slice(&body[..cut]));
        }
        body[3] = 99;
        assert!(decode_batch(Bytes::from(body)).is_err());
    }

    #[test]
    fn encode_and_decode_agree() {
        let entries = vec![
            BatchEntry {
                flag: 1,
                body: Bytes::from_static(b"a"),
                properties: "K\u{1}v\u{2}".into(),
            },
            BatchEntry {
                flag: 0,
                body: Bytes::new(),
                properties: String::new(),
            },
        ];
        let body = encode_batch(&entries).unwrap();
        assert_eq!(decode_batch(body).unwrap(), entries);
    }
}
