//! Frames ↔ [`RemotingCommand`].
//!
//! ```text
//! [total_len:4][ser_type:1 | header_len:3][header: header_len bytes][body: the rest]
//! ```
//! `total_len` excludes itself. JSON headers are parsed leniently (numbers or strings,
//! missing `serializeTypeCurrentRPC`, any JSON scalar in `extFields`); binary headers are
//! `[code:2][language:1][version:2][opaque:4][flag:4][remark_len:4][remark]
//! [ext_len:4][(key_len:2, key, val_len:4, val)*]`. Decoding checks completeness first
//! ("need more bytes" is `Ok(None)`), then parses; nothing a peer sends can panic it.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

use super::command::{language_code, language_name, RemotingCommand, SerializeType};
use super::RemotingError;

/// Default largest frame (`com.rocketmq.remoting.frameMaxLength`).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Takes one whole frame off the front of `buf` and decodes it; `Ok(None)` when more
/// bytes are needed.
///
/// # Errors
/// [`RemotingError::FrameTooLarge`] or [`RemotingError::Malformed`]; the connection
/// should be closed.
pub fn decode_frame(
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<RemotingCommand>, RemotingError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let total = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let total = usize::try_from(total)
        .map_err(|_| RemotingError::Malformed(format!("negative frame length {total}")))?;
    if total > max_frame {
        return Err(RemotingError::FrameTooLarge {
            len: total,
            max: max_frame,
        });
    }
    if total < 4 {
        return Err(RemotingError::Malformed(format!(
            "frame length {total} below 4"
        )));
    }
    if buf.len() < 4 + total {
        buf.reserve(4 + total - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let frame = buf.split_to(total).freeze();
    decode_body(frame).map(Some)
}

/// Decodes a frame without its length prefix.
///
/// # Errors
/// [`RemotingError::Malformed`].
pub fn decode_body(frame: Bytes) -> Result<RemotingCommand, RemotingError> {
    if frame.len() < 4 {
        return Err(RemotingError::Malformed(
            "frame shorter than its header length".into(),
        ));
    }
    let word = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let ser = (word >> 24) as u8;
    let header_len = (word & 0x00FF_FFFF) as usize;
    let header_end = 4usize
        .checked_add(header_len)
        .filter(|e| *e <= frame.len())
        .ok_or_else(|| {
            RemotingError::Malformed(format!(
                "header length {header_len} exceeds the frame ({} bytes)",
                frame.len()
            ))
        })?;
    let header = &frame[4..header_end];
    let mut cmd = match ser {
        0 => decode_json_header(header)?,
        1 => decode_binary_header(header)?,
        other => {
            return Err(RemotingError::Malformed(format!(
                "unknown serialization type {other}"
            )))
        }
    };
    let body = frame.slice(header_end..);
    cmd.body = if body.is_empty() {
        Vec::new()
    } else {
        vec![body]
    };
    Ok(cmd)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        // Nested values are not part of the protocol; keep their JSON text.
        other => Some(other.to_string()),
    }
}

fn int_field(obj: &Map<String, Value>, key: &str) -> Result<i64, RemotingError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| RemotingError::Malformed(format!("`{key}` is not an integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| RemotingError::Malformed(format!("`{key}` is not an integer"))),
        Some(_) => Err(RemotingError::Malformed(format!(
            "`{key}` is not an integer"
        ))),
    }
}

fn decode_json_header(header: &[u8]) -> Result<RemotingCommand, RemotingError> {
    let v: Value = serde_json::from_slice(header)
        .map_err(|e| RemotingError::Malformed(format!("JSON header: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(RemotingError::Malformed(
            "JSON header is not an object".into(),
        ));
    };
    let to_i32 = |key: &str| -> Result<i32, RemotingError> {
        let n = int_field(&obj, key)?;
        i32::try_from(n).map_err(|_| RemotingError::Malformed(format!("`{key}` out of range")))
    };
    let language = match obj.get("language") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => {
            language_name(n.as_u64().and_then(|c| u8::try_from(c).ok()).unwrap_or(7)).to_owned()
        }
        _ => "OTHER".to_owned(),
    };
    let mut ext_fields = BTreeMap::new();
    match obj.get("extFields") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if let Some(s) = scalar_string(v) {
                    ext_fields.insert(k.clone(), s);
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(RemotingError::Malformed(
                "`extFields` is not an object".into(),
            ))
        }
    }
    Ok(RemotingCommand {
        code: to_i32("code")?,
        language,
        version: to_i32("version")?,
        opaque: to_i32("opaque")?,
        flag: to_i32("flag")?,
        remark: obj.get("remark").and_then(scalar_string),
        ext_fields,
        body: Vec::new(),
        serialize_type: SerializeType::Json,
    })
}

/// Bounds-checked reader over a binary header.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RemotingError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                RemotingError::Malformed(format!(
                    "binary header needs {n} bytes at {} of {}",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RemotingError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, RemotingError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, RemotingError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn len(&mut self, n: i64) -> Result<usize, RemotingError> {
        usize::try_from(n).map_err(|_| RemotingError::Malformed(format!("negative length {n}")))
    }
    fn string(&mut self, len: usize) -> Result<String, RemotingError> {
        let b = self.take(len)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| RemotingError::Malformed("binary header string is not UTF-8".into()))
    }
}

fn decode_binary_header(header: &[u8]) -> Result<RemotingCommand, RemotingError> {
    let mut r = Reader {
        buf: header,
        pos: 0,
    };
    let code = i32::from(r.i16()?);
    let language = language_name(r.u8()?).to_owned();
    let version = i32::from(r.i16()?);
    let opaque = r.i32()?;
    let flag = r.i32()?;
    let remark_len = r.i32()?;
    let remark_len = r.len(i64::from(remark_len))?;
    let remark = if remark_len > 0 {
        Some(r.string(remark_len)?)
    } else {
        None
    };
    let ext_len = r.i32()?;
    let ext_len = r.len(i64::from(ext_len))?;
    let ext = r.take(ext_len)?;
    let mut er = Reader { buf: ext, pos: 0 };
    let mut ext_fields = BTreeMap::new();
    while er.pos < ext.len() {
        let kl = er.i16()?;
        let kl = er.len(i64::from(kl))?;
        let k = er.string(kl)?;
        let vl = er.i32()?;
        let vl = er.len(i64::from(vl))?;
        let v = er.string(vl)?;
        if !k.is_empty() {
            ext_fields.insert(k, v);
        }
    }
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: Vec::new(),
        serialize_type: SerializeType::RocketMq,
    })
}

fn encode_json_header(cmd: &RemotingCommand) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("code".into(), Value::from(cmd.code));
    if !cmd.ext_fields.is_empty() {
        let ext: Map<String, Value> = cmd
            .ext_fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        obj.insert("extFields".into(), Value::Object(ext));
    }
    obj.insert("flag".into(), Value::from(cmd.flag));
    obj.insert("language".into(), Value::String(cmd.language.clone()));
    obj.insert("opaque".into(), Value::from(cmd.opaque));
    if let Some(r) = &cmd.remark {
        obj.insert("remark".into(), Value::String(r.clone()));
    }
    obj.insert(
        "serializeTypeCurrentRPC".into(),
        Value::String("JSON".into()),
    );
    obj.insert("version".into(), Value::from(cmd.version));
    // A map of strings and numbers always serializes.
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

fn encode_binary_header(cmd: &RemotingCommand) -> Result<Vec<u8>, RemotingError> {
    let code = i16::try_from(cmd.code).map_err(|_| {
        RemotingError::Unencodable(format!("code {} does not fit the binary header", cmd.code))
    })?;
    let mut out = Vec::with_capacity(64);
    out.put_i16(code);
    out.put_u8(language_code(&cmd.language));
    out.put_i16(i16::try_from(cmd.version).unwrap_or(i16::MAX));
    out.put_i32(cmd.opaque);
    out.put_i32(cmd.flag);
    let remark = cmd.remark.as_deref().unwrap_or("").as_bytes();
    out.put_i32(remark.len() as i32);
    out.put_slice(remark);
    let mut ext = Vec::new();
    for (k, v) in &cmd.ext_fields {
        let kl = i16::try_from(k.len())
            .map_err(|_| RemotingError::Unencodable(format!("header key `{k}` too long")))?;
        ext.put_i16(kl);
        ext.put_slice(k.as_bytes());
        ext.put_i32(v.len() as i32);
        ext.put_slice(v.as_bytes());
    }
    out.put_i32(ext.len() as i32);
    out.put_slice(&ext);
    Ok(out)
}

/// Encodes the length prefix and header; the body parts follow on the wire as they are.
///
/// # Errors
/// [`RemotingError::Unencodable`] when the header or frame cannot be represented.
pub fn encode_head(cmd: &RemotingCommand) -> Result<Bytes, RemotingError> {
    let (ser, header) = match cmd.serialize_type {
        SerializeType::Json => (0u8, encode_json_header(cmd)),
        SerializeType::RocketMq => (1u8, encode_binary_header(cmd)?),
    };
    if header.len() > 0x00FF_FFFF {
        return Err(RemotingError::Unencodable(
            "header longer than 16 MiB".into(),
        ));
    }
    let total = 4 + header.len() + cmd.body_len();
    let total = i32::try_from(total)
        .map_err(|_| RemotingError::Unencodable(format!("frame of {total} bytes")))?;
    let mut out = BytesMut::with_capacity(8 + header.len());
    out.put_i32(total);
    out.put_u32((u32::from(ser) << 24) | header.len() as u32);
    out.put_slice(&header);
    Ok(out.freeze())
}

/// Encodes a whole frame into one buffer (copies the body; for tests and small frames).
///
/// # Errors
/// As [`encode_head`].
pub fn encode_frame(cmd: &RemotingCommand) -> Result<BytesMut, RemotingError> {
    let head = encode_head(cmd)?;
    let mut out = BytesMut::with_capacity(head.len() + cmd.body_len());
    out.put_slice(&head);
    for p in &cmd.body {
        out.put_slice(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_json_frame() {
        // Written by hand from the fact sheet: a JSON request with one ext field and a body.
        let header = br#"{"code":105,"extFields":{"topic":"T"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":479}"#;
        let mut golden = Vec::new();
        golden.extend_from_slice(&((4 + header.len() + 2) as i32).to_be_bytes());
        golden.extend_from_slice(&(header.len() as u32).to_be_bytes());
        golden.extend_from_slice(header);
        golden.extend_from_slice(b"hi");
        let cmd = RemotingCommand::request(105)
            .with_ext("topic", "T")
            .with_body(Bytes::from_static(b"hi"));
        let cmd = RemotingCommand { opaque: 7, ..cmd };
        assert_eq!(&encode_frame(&cmd).unwrap()[..], &golden[..]);
        let mut buf = BytesMut::from(&golden[..]);
        let back = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(back, cmd);
        assert!(buf.is_empty());
    }

    #[test]
    fn golden_binary_frame() {
        #[rustfmt::skip]
        let header: Vec<u8> = vec![
            0x00, 0x0A,             // code 10
            0x0C,                   // language RUST
            0x01, 0xDF,             // version 479
            0x00, 0x00, 0x00, 0x05, // opaque 5
            0x00, 0x00, 0x00, 0x01, // flag: response
            0x00, 0x00, 0x00, 0x02, b'o', b'k', // remark "ok"
            0x00, 0x00, 0x00, 0x0B, // ext length 11
            0x00, 0x01, b'a', 0x00, 0x00, 0x00, 0x04, b'1', b'2', b'3', b'4',
        ];
        let mut golden = Vec::new();
        golden.extend_from_slice(&((4 + header.len()) as i32).to_be_bytes());
        golden.extend_from_slice(&(0x0100_0000u32 | header.len() as u32).to_be_bytes());
        golden.extend_from_slice(&header);
        let mut buf = BytesMut::from(&golden[..]);
        let cmd = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(cmd.code, 10);
        assert_eq!(cmd.language, "RUST");
        assert_eq!((cmd.version, cmd.opaque, cmd.flag), (479, 5, 1));
        assert_eq!(cmd.remark.as_deref(), Some("ok"));
        assert_eq!(cmd.ext("a"), Some("1234"));
        assert_eq!(cmd.serialize_type, SerializeType::RocketMq);
        assert_eq!(&encode_frame(&cmd).unwrap()[..], &golden[..]);
    }

    #[test]
    fn lenient_json_as_real_clients_send_it() {
        // Numbers and booleans in extFields, numeric language, no serializeTypeCurrentRPC,
        // unknown keys, null remark.
        let header = br#"{"code":"310","language":12,"version":1,"opaque":3,"flag":0,"remark":null,"extFields":{"e":0,"m":false,"b":"T","x":null},"whatever":[1]}"#;
        let mut frame = Vec::new();
        frame.extend_from_slice(&((4 + header.len()) as i32).to_be_bytes());
        frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
        frame.extend_from_slice(header);
        let cmd = decode_frame(&mut BytesMut::from(&frame[..]), DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(cmd.code, 310);
        assert_eq!(cmd.language, "RUST");
        assert_eq!(cmd.ext("e"), Some("0"));
        assert_eq!(cmd.ext("m"), Some("false"));
        assert_eq!(cmd.ext("x"), None);
        assert_eq!(cmd.ext_num::<i32>("e").unwrap(), 0);
        assert_eq!(cmd.ext_bool("m"), Some(false));
        assert!(cmd.remark.is_none());
    }

    #[test]
    fn every_prefix_is_incomplete_or_an_error() {
        let cmd = RemotingCommand::request(11)
            .with_ext("topic", "T")
            .with_body(Bytes::from_static(b"body"));
        for st in [SerializeType::Json, SerializeType::RocketMq] {
            let full = encode_frame(&RemotingCommand {
                serialize_type: st,
                ..cmd.clone()
            })
            .unwrap();
            for cut in 0..full.len() {
                let mut b = BytesMut::from(&full[..cut]);
                assert!(matches!(decode_frame(&mut b, DEFAULT_MAX_FRAME), Ok(None)));
            }
            // A header length that lies about the frame is an error, not a panic.
            let mut lying = full.to_vec();
            lying[5] = 0xFF;
            assert!(decode_frame(&mut BytesMut::from(&lying[..]), DEFAULT_MAX_FRAME).is_err());
        }
    }

    #[test]
    fn limits_and_garbage() {
        let mut big = BytesMut::from(&((DEFAULT_MAX_FRAME + 1) as i32).to_be_bytes()[..]);
        assert!(matches!(
            decode_frame(&mut big, DEFAULT_MAX_FRAME),
            Err(RemotingError::FrameTooLarge { .. })
        ));
        let mut neg = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert!(decode_frame(&mut neg, DEFAULT_MAX_FRAME).is_err());
        let mut bad_type = BytesMut::from(&[0, 0, 0, 4, 7, 0, 0, 0][..]);
        assert!(decode_frame(&mut bad_type, DEFAULT_MAX_FRAME).is_err());
        let mut not_json = BytesMut::from(&[0, 0, 0, 6, 0, 0, 0, 2, b'{', b'x'][..]);
        assert!(decode_frame(&mut not_json, DEFAULT_MAX_FRAME).is_err());
        assert!(encode_head(&RemotingCommand {
            code: 200_050,
            serialize_type: SerializeType::RocketMq,
            ..RemotingCommand::default()
        })
        .is_err());
    }

    proptest! {
        #[test]
        fn round_trip(
            code in -32768i32..32767, opaque in any::<i32>(), flag in 0i32..4,
            remark in proptest::option::of("[^\u{0}]{1,40}"),
            ext in proptest::collection::btree_map("[a-zA-Z]{1,12}", "[ -~]{0,30}", 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            binary in any::<bool>(),
        ) {
            let cmd = RemotingCommand {
                code, opaque, flag, remark, ext_fields: ext,
                language: "JAVA".into(), version: 479,
                body: if body.is_empty() { vec![] } else { vec![Bytes::from(body)] },
                serialize_type: if binary { SerializeType::RocketMq } else { SerializeType::Json },
            };
            let mut buf = encode_frame(&cmd).unwrap();
            let back = decode_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
            prop_assert_eq!(back, cmd);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode_frame(&mut buf, 1 << 16) {}
        }

        /// Arbitrary header bytes behind an honest header length: the frame layer
        /// accepts the frame, so the JSON or binary header parser itself is exercised.
        #[test]
        fn arbitrary_headers_reach_the_parsers(
            header in proptest::collection::vec(any::<u8>(), 0..200), binary in any::<bool>()
        ) {
            let r = decode_body(Bytes::from(frame_with_header(&header, binary, b"")));
            if let Err(RemotingError::Malformed(m)) = &r {
                prop_assert!(!m.starts_with("header length"), "never reached a parser: {m}");
            }
        }

        /// JSON headers built from the protocol's own fields, with values of every JSON
        /// type (numbers too large for i32, floats, nested objects, nulls).
        #[test]
        fn structured_json_headers_never_panic(
            fields in proptest::collection::btree_map(
                prop_oneof![
                    Just("code".to_owned()), Just("language".to_owned()),
                    Just("version".to_owned()), Just("opaque".to_owned()),
                    Just("flag".to_owned()), Just("remark".to_owned()),
                    Just("extFields".to_owned()),
                    Just("serializeTypeCurrentRPC".to_owned()), "[a-z]{1,6}",
                ],
                arb_json(),
                0..9,
            ),
        ) {
            let header = serde_json::to_vec(&Value::Object(fields.into_iter().collect()))
                .unwrap_or_default();
            let r = decode_body(Bytes::from(frame_with_header(&header, false, b"xy")));
            if let Ok(cmd) = r {
                prop_assert_eq!(cmd.serialize_type, SerializeType::Json);
                prop_assert_eq!(cmd.body_len(), 2);
            }
        }

        /// Binary headers with every length field either honest or arbitrary.
        #[test]
        fn structured_binary_headers_never_panic(
            code in any::<i16>(), lang in any::<u8>(), opaque in any::<i32>(),
            remark in "[ -~]{0,20}", remark_len in proptest::option::of(any::<i32>()),
            ext in proptest::collection::vec(
                ("[a-z]{0,8}", "[ -~]{0,16}", proptest::option::of(any::<i16>()),
                 proptest::option::of(any::<i32>())),
                0..5,
            ),
            ext_len in proptest::option::of(any::<i32>()),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut e = Vec::new();
            for (k, v, kl, vl) in &ext {
                e.put_i16(kl.unwrap_or(k.len() as i16));
                e.put_slice(k.as_bytes());
                e.put_i32(vl.unwrap_or(v.len() as i32));
                e.put_slice(v.as_bytes());
            }
            let mut h = Vec::new();
            h.put_i16(code);
            h.put_u8(lang);
            h.put_i16(479);
            h.put_i32(opaque);
            h.put_i32(0);
            h.put_i32(remark_len.unwrap_or(remark.len() as i32));
            h.put_slice(remark.as_bytes());
            h.put_i32(ext_len.unwrap_or(e.len() as i32));
            h.put_slice(&e);
            let honest = remark_len.is_none()
                && ext_len.is_none()
                && ext.iter().all(|(_, _, kl, vl)| kl.is_none() && vl.is_none());
            let r = decode_body(Bytes::from(frame_with_header(&h, true, b"")));
            if honest {
                let cmd = r.unwrap();
                prop_assert_eq!(cmd.code, i32::from(code));
                prop_assert_eq!(cmd.opaque, opaque);
            }
            // Every prefix of the header is an error or a command, never a panic.
            let n = cut.index(h.len() + 1);
            let _ = decode_body(Bytes::from(frame_with_header(&h[..n], true, b"")));
        }
    }

    /// `[ser_type:1 | header_len:3][header][body]`: a frame body without its length prefix.
    fn frame_with_header(header: &[u8], binary: bool, body: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        let word = header.len() as u32 | if binary { 0x0100_0000 } else { 0 };
        frame.extend_from_slice(&word.to_be_bytes());
        frame.extend_from_slice(header);
        frame.extend_from_slice(body);
        frame
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[ -~]{0,12}".prop_map(Value::from),
            any::<i64>().prop_map(|n| Value::from(n.to_string())),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
