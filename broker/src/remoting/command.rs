//! `RemotingCommand`: one request or response of RocketMQ's remoting protocol.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::RemotingError;

/// `flag` bit: this frame is a response.
pub const FLAG_RESPONSE: i32 = 0x1;
/// `flag` bit: the request expects no response.
pub const FLAG_ONEWAY: i32 = 0x2;
/// The version we report: `V5_3_3`.
pub const OUR_VERSION: i32 = 479;

/// Header serialization (`SerializeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializeType {
    /// JSON text header (type byte 0).
    #[default]
    Json,
    /// Binary header (type byte 1).
    RocketMq,
}

/// `LanguageCode` names, in code order.
pub const LANGUAGES: [&str; 14] = [
    "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO", "PHP",
    "OMS", "RUST", "NODE_JS",
];

/// The language code of a name (`OTHER` for unknown names).
pub fn language_code(name: &str) -> u8 {
    LANGUAGES.iter().position(|l| *l == name).unwrap_or(7) as u8
}

/// The name of a language code (`OTHER` for unknown codes).
pub fn language_name(code: u8) -> &'static str {
    LANGUAGES.get(usize::from(code)).copied().unwrap_or("OTHER")
}

/// A request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotingCommand {
    /// Request code (requests) or response code (responses).
    pub code: i32,
    /// Sender's language name, e.g. `JAVA`.
    pub language: String,
    /// Sender's version ordinal.
    pub version: i32,
    /// Request id, echoed by the response.
    pub opaque: i32,
    /// `FLAG_RESPONSE` | `FLAG_ONEWAY`.
    pub flag: i32,
    /// Human-readable text, mostly on errors.
    pub remark: Option<String>,
    /// The per-request header fields.
    pub ext_fields: BTreeMap<String, String>,
    /// Body parts, sent back to back (a pull response sends mapped CommitLog views).
    pub body: Vec<Bytes>,
    /// Header encoding this command arrived in or is sent in.
    pub serialize_type: SerializeType,
}

impl Default for RemotingCommand {
    fn default() -> Self {
        RemotingCommand {
            code: 0,
            language: "JAVA".into(),
            version: OUR_VERSION,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields: BTreeMap::new(),
            body: Vec::new(),
            serialize_type: SerializeType::Json,
        }
    }
}

impl RemotingCommand {
    /// A new request.
    pub fn request(code: i32) -> Self {
        RemotingCommand {
            code,
            ..RemotingCommand::default()
        }
    }

    /// The response to `req`: same opaque and header encoding, response flag set.
    pub fn response_to(req: &RemotingCommand, code: i32) -> Self {
        RemotingCommand {
            code,
            opaque: req.opaque,
            flag: FLAG_RESPONSE,
            serialize_type: req.serialize_type,
            ..RemotingCommand::default()
        }
    }

    /// Sets the remark.
    pub fn with_remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }

    /// Sets one header field.
    pub fn with_ext(mut self, key: &str, value: impl ToString) -> Self {
        self.ext_fields.insert(key.to_owned(), value.to_string());
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        let b = body.into();
        self.body = if b.is_empty() { Vec::new() } else { vec![b] };
        self
    }

    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Whether this request expects no response.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Total body length.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// The body as one buffer (copies only when it has several parts).
    pub fn body_bytes(&self) -> Bytes {
        match self.body.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut v = Vec::with_capacity(self.body_len());
                for p in parts {
                    v.extend_from_slice(p);
                }
                Bytes::from(v)
            }
        }
    }

    /// A header field, if present.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key).map(String::as_str)
    }

    /// A required header field.
    ///
    /// # Errors
    /// [`RemotingError::MissingField`].
    pub fn ext_required(&self, key: &'static str) -> Result<&str, RemotingError> {
        self.ext(key).ok_or(RemotingError::MissingField(key))
    }

    /// A required numeric header field.
    ///
    /// # Errors
    /// [`RemotingError::MissingField`] or [`RemotingError::BadField`].
    pub fn ext_num<T: std::str::FromStr>(&self, key: &'static str) -> Result<T, RemotingError> {
        let v = self.ext_required(key)?;
        v.trim().parse().map_err(|_| RemotingError::BadField {
            field: key,
            value: v.chars().take(64).collect(),
        })
    }

    /// An optional numeric header field (absent, empty or `null` → `None`).
    ///
    /// # Errors
    /// [`RemotingError::BadField`] when present but not a number.
    pub fn ext_num_opt<T: std::str::FromStr>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, RemotingError> {
        match self.ext(key) {
            None | Some("") | Some("null") => Ok(None),
            Some(_) => self.ext_num(key).map(Some),
        }
    }

    /// An optional boolean header field (`"true"` / `"false"`, Java's parseBoolean).
    pub fn ext_bool(&self, key: &str) -> Option<bool> {
        self.ext(key).map(|v| v.eq_ignore_ascii_case("true"))
    }
}
