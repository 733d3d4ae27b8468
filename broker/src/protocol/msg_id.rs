//! The offset message id (`msgId` of a send answer, `MessageDecoder.createMessageId`):
//! the store host's IP and port and the record's physical offset, as upper-case hex.
//!
//! ```text
//! [ip:4 or 16][port:4 (i32 BE)][physical offset:8 (i64 BE)]  → 32 or 56 hex digits
//! ```

use std::net::SocketAddr;

/// The offset message id: store host IP, port and physical offset, upper-case hex.
#[must_use]
pub fn offset_msg_id(store_host: SocketAddr, phys: u64) -> String {
    use std::fmt::Write;
    let mut bytes = Vec::with_capacity(28);
    match store_host.ip() {
        std::net::IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
    }
    bytes.extend_from_slice(&i32::from(store_host.port()).to_be_bytes());
    bytes.extend_from_slice(&phys.to_be_bytes());
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Decodes an offset message id into its store host and physical offset.
#[must_use]
pub fn decode_offset_msg_id(id: &str) -> Option<(SocketAddr, u64)> {
    let raw: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(id.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let (ip, rest): (std::net::IpAddr, &[u8]) = match raw.len() {
        16 => (
            std::net::IpAddr::from(<[u8; 4]>::try_from(&raw[..4]).ok()?),
            &raw[4..],
        ),
        28 => (
            std::net::IpAddr::from(<[u8; 16]>::try_from(&raw[..16]).ok()?),
            &raw[16..],
        ),
        _ => return None,
    };
    let port = u16::try_from(i32::from_be_bytes(rest[..4].try_into().ok()?)).ok()?;
    let phys = u64::from_be_bytes(rest[4..12].try_into().ok()?);
    Some((SocketAddr::new(ip, port), phys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_msg_ids_round_trip() {
        let addr: SocketAddr = "10.0.0.1:10911".parse().unwrap();
        let id = offset_msg_id(addr, 0x1234);
        assert_eq!(id, "0A00000100002A9F0000000000001234");
        assert_eq!(decode_offset_msg_id(&id), Some((addr, 0x1234)));
        assert_eq!(decode_offset_msg_id("XYZ"), None);
    }
}
