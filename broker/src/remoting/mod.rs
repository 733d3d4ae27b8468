//! RocketMQ's remoting protocol: frame codec, commands and codes, a tokio server and a
//! small client.

pub mod client;
pub mod codec;
pub mod codes;
pub mod command;
pub mod server;
pub mod tls;

pub use client::RemotingClient;
pub use codec::{decode_frame, encode_frame, encode_head, DEFAULT_MAX_FRAME};
pub use command::{RemotingCommand, SerializeType, FLAG_ONEWAY, FLAG_RESPONSE};
pub use server::{serve, Connection, InvokeError, RequestHandler, ResponseFuture, ServerConfig};

/// Why a request header cannot be read into its typed form (`XHeader::parse`): a
/// missing field ([`RemotingError::MissingField`]) or a bad value
/// ([`RemotingError::BadField`]).
pub type HeaderError = RemotingError;

/// Protocol errors.
#[derive(Debug, thiserror::Error)]
pub enum RemotingError {
    /// A frame longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Bytes that are not a valid frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A command that cannot be encoded.
    #[error("cannot encode: {0}")]
    Unencodable(String),
    /// A required header field is missing.
    #[error("missing header field `{0}`")]
    MissingField(&'static str),
    /// A header field has a bad value.
    #[error("bad value `{value}` for header field `{field}`")]
    BadField {
        /// Field.
        field: &'static str,
        /// Value (truncated).
        value: String,
    },
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// No response in time.
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    /// The connection closed before the response.
    #[error("connection closed")]
    Closed,
}
