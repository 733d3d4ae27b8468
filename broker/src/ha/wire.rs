//! Every frame of the HA connection, encoded and decoded in one place.
//!
//! ```text
//! slave → master   [offset:8]                      the slave's CommitLog max offset (i64 BE),
//!                                                  or −1 (HELLO_REQUEST) as the first report
//!                  [−2:8][size:4][json:size]       or −2 (HELLO_WITH_ID) and who it is:
//!                  {"addr":"ip:port","brokerId":N}  (then the hello, as after −1)
//! master → slave   [offset:8][size:4][bytes:size]  CommitLog bytes starting at `offset`
//!                  [offset:8][0:4]                 heartbeat (size 0)
//!                  [−1:8][size:4][json:size]       hello (only after a HELLO_REQUEST):
//!                  {"epoch":E,"epochs":[{"epoch":..,"startOffset":..}],"maxOffset":M,"minOffset":m}
//! with haRequireSignature, before anything else:
//! master → slave   [−3:8][size:4][nonce]           challenge
//! slave → master   [−4:8][size:4][signature]       base64 HMAC-SHA1("ferrocket-ha:" + nonce)
//! ```
//!
//! Offsets and sizes are Java's signed big-endian longs and ints, as RocketMQ's
//! `HAConnection` writes them; a classic RocketMQ slave never sends −1 and never sees a
//! hello.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::epoch::EpochEntry;

/// Largest body of one data frame (`haTransferBatchSize`).
pub const TRANSFER_BATCH: usize = 32 * 1024;
/// A ferrocket slave's first 8 bytes: "send me the hello first".
pub const HELLO_REQUEST: i64 = -1;
/// A ferrocket slave's first 8 bytes when it says who it is (its remoting address and
/// id follow), so the master can keep an in-sync replica set by broker.
pub const HELLO_WITH_ID: i64 = -2;
/// Largest slave identity accepted.
pub const MAX_IDENTITY: usize = 4096;
/// With `haRequireSignature`: the master's first frame, `[−3:8][size:4][nonce]`.
pub const CHALLENGE: i64 = -3;
/// With `haRequireSignature`: the slave's answer, `[−4:8][size:4][signature]` — base64
/// HMAC-SHA1 of `ferrocket-ha:` + the nonce with the group's control secret.
pub const CHALLENGE_ANSWER: i64 = -4;
/// Largest challenge or answer body.
pub const MAX_CHALLENGE: usize = 256;

/// What a challenge's answer signs.
#[must_use]
pub fn challenge_content(nonce: &[u8]) -> Vec<u8> {
    let mut c = b"ferrocket-ha:".to_vec();
    c.extend_from_slice(nonce);
    c
}

/// `[offset:8][size:4][body]` with a small body (a challenge or its answer).
#[must_use]
pub fn encode_small(offset: i64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEAD + body.len());
    out.extend_from_slice(&encode_frame_head(offset, body.len()));
    out.extend_from_slice(body);
    out
}

/// Reads a `[kind:8][size:4][body]` frame whose kind must be `kind` and body at most
/// [`MAX_CHALLENGE`] bytes.
///
/// # Errors
/// I/O errors; another kind or a larger body as `InvalidData`.
pub async fn read_small(rd: &mut (impl AsyncRead + Unpin), kind: i64) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; FRAME_HEAD];
    rd.read_exact(&mut head).await?;
    let mut k = [0u8; 8];
    k.copy_from_slice(&head[..8]);
    let got = i64::from_be_bytes(k);
    let mut sz = [0u8; 4];
    sz.copy_from_slice(&head[8..]);
    let size = i32::from_be_bytes(sz);
    let size = usize::try_from(size)
        .ok()
        .filter(|s| got == kind && *s <= MAX_CHALLENGE)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "expected frame {kind} of at most {MAX_CHALLENGE} bytes, got {got} of {size}"
                ),
            )
        })?;
    let mut body = vec![0u8; size];
    rd.read_exact(&mut body).await?;
    Ok(body)
}

/// Who a slave is (after [`HELLO_WITH_ID`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SlaveIdentity {
    /// Its remoting address (`brokerIP1:listenPort`).
    pub addr: String,
    /// Its brokerId.
    pub broker_id: i64,
}

/// The identity announcement: `[−2:8][size:4][json]`.
///
/// # Errors
/// An identity too large.
pub fn encode_identity(id: &SlaveIdentity) -> Result<Vec<u8>, WireError> {
    let body = serde_json::to_vec(id).map_err(|e| WireError::BadHello(e.to_string()))?;
    if body.len() > MAX_IDENTITY {
        return Err(WireError::BadHello(format!(
            "identity of {} bytes",
            body.len()
        )));
    }
    let mut out = Vec::with_capacity(FRAME_HEAD + body.len());
    out.extend_from_slice(&encode_frame_head(HELLO_WITH_ID, body.len()));
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the identity's size and body, after its 8-byte `−2` was read.
///
/// # Errors
/// I/O errors; a size above [`MAX_IDENTITY`] or a body that is not an identity as
/// `InvalidData`.
pub async fn read_identity(rd: &mut (impl AsyncRead + Unpin)) -> std::io::Result<SlaveIdentity> {
    let mut size = [0u8; 4];
    rd.read_exact(&mut size).await?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_IDENTITY)
        .ok_or_else(|| WireError::BadHello(format!("identity of {size} bytes")))?;
    let mut body = vec![0u8; size];
    rd.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body).map_err(|e| WireError::BadHello(e.to_string()))?)
}

/// Largest hello body accepted.
pub const MAX_HELLO: usize = 1 << 20;
/// Largest data frame a slave accepts.
pub const MAX_DATA_FRAME: usize = 4 * 1024 * 1024;
/// Bytes of a frame header (`offset:8 | size:4`).
pub const FRAME_HEAD: usize = 12;
/// Bytes of an offset report.
pub const OFFSET_REPORT: usize = 8;

/// A frame that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the frame needs.
    #[error("HA frame needs {need} bytes, has {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes at hand.
        have: usize,
    },
    /// A negative size field.
    #[error("negative HA frame size {0}")]
    NegativeSize(i32),
    /// A hello whose body is not the expected JSON, or too large.
    #[error("bad hello: {0}")]
    BadHello(String),
}

impl From<WireError> for std::io::Error {
    fn from(e: WireError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// The hello frame's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// The master's epoch.
    pub epoch: i64,
    /// The master's epoch history.
    pub epochs: Vec<EpochEntry>,
    /// The master's CommitLog max offset.
    pub max_offset: u64,
    /// Where the master's oldest CommitLog file starts.
    #[serde(default)]
    pub min_offset: u64,
}

/// A frame header from the master: `offset` −1 is a hello, size 0 a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Where the bytes start (−1 for a hello).
    pub offset: i64,
    /// Bytes that follow.
    pub size: usize,
}

/// An offset as the 8 big-endian bytes of a Java long (offsets past `i64::MAX` are
/// written as `i64::MAX`; a CommitLog never gets there).
#[must_use]
pub fn encode_offset(offset: u64) -> [u8; OFFSET_REPORT] {
    i64::try_from(offset).unwrap_or(i64::MAX).to_be_bytes()
}

/// The offset report in `buf` (its first 8 bytes).
///
/// # Errors
/// [`WireError::Truncated`].
pub fn decode_offset(buf: &[u8]) -> Result<i64, WireError> {
    let b: [u8; OFFSET_REPORT] = buf
        .get(..OFFSET_REPORT)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Truncated {
            need: OFFSET_REPORT,
            have: buf.len(),
        })?;
    Ok(i64::from_be_bytes(b))
}

/// The header of a data frame carrying `size` bytes from `offset`.
#[must_use]
pub fn encode_frame_head(offset: i64, size: usize) -> [u8; FRAME_HEAD] {
    let mut h = [0u8; FRAME_HEAD];
    h[..8].copy_from_slice(&offset.to_be_bytes());
    h[8..].copy_from_slice(&i32::try_from(size).unwrap_or(i32::MAX).to_be_bytes());
    h
}

/// A heartbeat frame at `offset`.
#[must_use]
pub fn heartbeat(offset: u64) -> [u8; FRAME_HEAD] {
    encode_frame_head(i64::try_from(offset).unwrap_or(i64::MAX), 0)
}

/// A whole data frame (header and bytes) into `out`, which is cleared first, so the
/// caller sends one segment per frame.
pub fn encode_data_frame(offset: u64, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&encode_frame_head(
        i64::try_from(offset).unwrap_or(i64::MAX),
        data.len(),
    ));
    out.extend_from_slice(data);
}

/// The hello frame (header and JSON body).
///
/// # Errors
/// [`WireError::BadHello`] when the body would exceed [`MAX_HELLO`].
pub fn encode_hello(hello: &Hello) -> Result<Vec<u8>, WireError> {
    let body = serde_json::to_vec(hello).map_err(|e| WireError::BadHello(e.to_string()))?;
    if body.len() > MAX_HELLO {
        return Err(WireError::BadHello(format!("{} bytes", body.len())));
    }
    let mut frame = Vec::with_capacity(FRAME_HEAD + body.len());
    frame.extend_from_slice(&encode_frame_head(HELLO_REQUEST, body.len()));
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// A frame header from its 12 bytes.
///
/// # Errors
/// [`WireError::Truncated`], [`WireError::NegativeSize`].
pub fn decode_frame_head(buf: &[u8]) -> Result<FrameHead, WireError> {
    let offset = decode_offset(buf)?;
    let size: [u8; 4] = buf
        .get(8..FRAME_HEAD)
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::Truncated {
            need: FRAME_HEAD,
            have: buf.len(),
        })?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size).map_err(|_| WireError::NegativeSize(size))?;
    Ok(FrameHead { offset, size })
}

/// A hello frame's body, once its header said `offset` −1 and `size`.
///
/// # Errors
/// [`WireError::BadHello`].
pub fn decode_hello(head: FrameHead, body: &[u8]) -> Result<Hello, WireError> {
    if head.offset != HELLO_REQUEST || head.size > MAX_HELLO || body.len() != head.size {
        return Err(WireError::BadHello(format!(
            "expected a hello frame, got offset {} size {}",
            head.offset, head.size
        )));
    }
    serde_json::from_slice(body).map_err(|e| WireError::BadHello(e.to_string()))
}

/// Reads one offset report.
///
/// # Errors
/// I/O errors (EOF included).
pub async fn read_offset(rd: &mut (impl AsyncRead + Unpin)) -> std::io::Result<i64> {
    let mut b = [0u8; OFFSET_REPORT];
    rd.read_exact(&mut b).await?;
    Ok(decode_offset(&b)?)
}

/// Reads one frame header.
///
/// # Errors
/// I/O errors; a negative size as `InvalidData`.
pub async fn read_frame_head(rd: &mut (impl AsyncRead + Unpin)) -> std::io::Result<FrameHead> {
    let mut head = [0u8; FRAME_HEAD];
    rd.read_exact(&mut head).await?;
    Ok(decode_frame_head(&head)?)
}

/// Reads a hello frame (header and body).
///
/// # Errors
/// I/O errors; anything but a hello as `InvalidData`.
pub async fn read_hello(rd: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Hello> {
    let head = read_frame_head(rd).await?;
    if head.offset != HELLO_REQUEST || head.size > MAX_HELLO {
        return Err(decode_hello(head, &[])
            .err()
            .map_or_else(|| std::io::Error::other("bad hello"), std::io::Error::from));
    }
    let mut body = vec![0u8; head.size];
    rd.read_exact(&mut body).await?;
    Ok(decode_hello(head, &body)?)
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[tokio::test]
    async fn an_identity_round_trips_and_bad_ones_are_refused() {
        let id = SlaveIdentity {
            addr: "10.0.0.2:10911".into(),
            broker_id: 2,
        };
        let bytes = encode_identity(&id).expect("encode");
        assert_eq!(decode_offset(&bytes), Ok(HELLO_WITH_ID));
        let mut rd = &bytes[8..];
        assert_eq!(read_identity(&mut rd).await.expect("decode"), id);
        // Every strict prefix is an error, never a panic.
        for cut in 8..bytes.len() {
            let mut rd = &bytes[8..cut];
            assert!(read_identity(&mut rd).await.is_err(), "prefix {cut}");
        }
        let mut huge = Vec::from((MAX_IDENTITY as i32 + 1).to_be_bytes());
        huge.extend_from_slice(b"{}");
        assert!(read_identity(&mut huge.as_slice()).await.is_err());
        let mut neg = Vec::from((-5i32).to_be_bytes());
        neg.extend_from_slice(b"{}");
        assert!(read_identity(&mut neg.as_slice()).await.is_err());
        let mut junk = Vec::from(3i32.to_be_bytes());
        junk.extend_from_slice(b"abc");
        assert!(read_identity(&mut junk.as_slice()).await.is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_offset_report() {
        // 0x0102_0304_0506 as a Java long.
        assert_eq!(encode_offset(0x0102_0304_0506), [0, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(decode_offset(&[0xFF; 8]), Ok(HELLO_REQUEST));
        assert_eq!(
            decode_offset(&[0, 0, 1, 2, 3, 4, 5, 6, 9]),
            Ok(0x0102_0304_0506)
        );
    }

    #[test]
    fn golden_data_frame_and_heartbeat() {
        let mut out = Vec::new();
        encode_data_frame(4096, b"abc", &mut out);
        assert_eq!(
            out,
            [0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 3, b'a', b'b', b'c']
        );
        assert_eq!(heartbeat(7), [0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!(
            decode_frame_head(&out),
            Ok(FrameHead {
                offset: 4096,
                size: 3
            })
        );
    }

    #[test]
    fn golden_hello() {
        let hello = Hello {
            epoch: 2,
            epochs: vec![EpochEntry {
                epoch: 2,
                start_offset: 10,
            }],
            max_offset: 20,
            min_offset: 0,
        };
        let frame = encode_hello(&hello).unwrap();
        let body =
            br#"{"epoch":2,"epochs":[{"epoch":2,"startOffset":10}],"maxOffset":20,"minOffset":0}"#;
        let mut golden = vec![0xFF; 8];
        golden.extend_from_slice(&(body.len() as i32).to_be_bytes());
        golden.extend_from_slice(body);
        assert_eq!(frame, golden);
        let head = decode_frame_head(&frame).unwrap();
        assert_eq!(decode_hello(head, &frame[FRAME_HEAD..]), Ok(hello));
        // An older master's hello without minOffset still decodes.
        let old = br#"{"epoch":1,"epochs":[],"maxOffset":0}"#;
        let head = FrameHead {
            offset: HELLO_REQUEST,
            size: old.len(),
        };
        assert_eq!(decode_hello(head, old).unwrap().min_offset, 0);
    }

    #[test]
    fn every_prefix_is_truncated_and_lies_are_refused() {
        let mut out = Vec::new();
        encode_data_frame(1, b"x", &mut out);
        for cut in 0..FRAME_HEAD {
            assert!(matches!(
                decode_frame_head(&out[..cut]),
                Err(WireError::Truncated { .. })
            ));
        }
        for cut in 0..OFFSET_REPORT {
            assert!(decode_offset(&out[..cut]).is_err());
        }
        let neg = encode_frame_head(0, 0);
        let mut neg = neg.to_vec();
        neg[8..].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(decode_frame_head(&neg), Err(WireError::NegativeSize(-1)));
        // A data frame where a hello is expected, an oversized hello, bad JSON.
        let data = FrameHead { offset: 0, size: 2 };
        assert!(decode_hello(data, b"{}").is_err());
        let huge = FrameHead {
            offset: HELLO_REQUEST,
            size: MAX_HELLO + 1,
        };
        assert!(decode_hello(huge, &[]).is_err());
        let bad = FrameHead {
            offset: HELLO_REQUEST,
            size: 3,
        };
        assert!(decode_hello(bad, b"{x}").is_err());
        let hello = encode_hello(&Hello {
            epoch: 1,
            epochs: vec![],
            max_offset: 0,
            min_offset: 0,
        })
        .unwrap();
        for cut in FRAME_HEAD..hello.len() {
            let head = decode_frame_head(&hello).unwrap();
            assert!(decode_hello(head, &hello[FRAME_HEAD..cut]).is_err());
        }
    }

    #[tokio::test]
    async fn async_readers_use_the_same_decoders() {
        let mut frame = encode_hello(&Hello {
            epoch: 3,
            epochs: vec![],
            max_offset: 5,
            min_offset: 1,
        })
        .unwrap();
        frame.extend_from_slice(&heartbeat(5));
        let mut rd = &frame[..];
        assert_eq!(read_hello(&mut rd).await.unwrap().epoch, 3);
        let head = read_frame_head(&mut rd).await.unwrap();
        assert_eq!(head, FrameHead { offset: 5, size: 0 });
        assert!(read_offset(&mut rd).await.is_err());
    }
}
