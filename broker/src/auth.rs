//! Request signatures, as RocketMQ's ACL 1.0 computes them (`AclClientRPCHook` on the
//! client, `PlainAccessValidator` on the broker): the request's header fields sorted by
//! name, except `Signature` and `_UNIQUE_KEY_QUERY`, their values concatenated in that
//! order, then the body; HMAC-SHA1 of that with the secret key, in base64. The client
//! adds `AccessKey` (and signs it) and `Signature`.
//!
//! ferrocket uses it for the control plane: role changes and the permission changes of
//! a switchover are accepted only with a valid signature when the broker is given a
//! control secret (`controlSecretFile`), which the operator mounts from a Secret and
//! signs its requests with. One module, so access control (ACL) uses the same code.

use std::path::Path;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::remoting::RemotingCommand;

/// The header field naming the account.
pub const ACCESS_KEY: &str = "AccessKey";
/// The header field holding the signature.
pub const SIGNATURE: &str = "Signature";
/// A header field RocketMQ leaves out of the signed content.
const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";
/// The access key the operator signs with unless configured otherwise.
pub const DEFAULT_CONTROL_ACCESS_KEY: &str = "ferrocket-operator";

/// An account: access key and secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key (sent in clear as `AccessKey`).
    pub access_key: String,
    secret_key: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Why a signature is refused, or credentials cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request carries no signature.
    #[error("the request is not signed (no {SIGNATURE}/{ACCESS_KEY} fields)")]
    Unsigned,
    /// Another account signed it.
    #[error("access key {0} is not allowed here")]
    UnknownAccessKey(String),
    /// The signature does not match.
    #[error("check signature failed")]
    BadSignature,
    /// The secret file cannot be read or is empty.
    #[error("control secret {path}: {reason}")]
    Secret {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl Credentials {
    /// Credentials from an access key and a secret key.
    ///
    /// # Errors
    /// An empty secret.
    pub fn new(access_key: &str, secret_key: &[u8]) -> Result<Self, AuthError> {
        if secret_key.is_empty() {
            return Err(AuthError::Secret {
                path: String::new(),
                reason: "empty secret key".into(),
            });
        }
        Ok(Credentials {
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_vec(),
        })
    }

    /// Reads the secret key from `path` (surrounding whitespace trimmed).
    ///
    /// # Errors
    /// An unreadable or empty file.
    pub fn from_file(access_key: &str, path: &Path) -> Result<Self, AuthError> {
        let bad = |reason: String| AuthError::Secret {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let key = bytes.trim_ascii();
        if key.is_empty() {
            return Err(bad("the file is empty".into()));
        }
        Credentials::new(access_key, key)
    }

    /// Signs `cmd`: sets `AccessKey`, then `Signature` over the rest.
    pub fn sign(&self, cmd: &mut RemotingCommand) {
        cmd.ext_fields
            .insert(ACCESS_KEY.to_owned(), self.access_key.clone());
        cmd.ext_fields.remove(SIGNATURE);
        let sig = signature(&content(cmd), &self.secret_key);
        cmd.ext_fields.insert(SIGNATURE.to_owned(), sig);
    }

    /// Checks that `cmd` was signed with these credentials.
    ///
    /// # Errors
    /// [`AuthError::Unsigned`], [`AuthError::UnknownAccessKey`], [`AuthError::BadSignature`].
    pub fn verify(&self, cmd: &RemotingCommand) -> Result<(), AuthError> {
        let (Some(ak), Some(sig)) = (cmd.ext(ACCESS_KEY), cmd.ext(SIGNATURE)) else {
            return Err(AuthError::Unsigned);
        };
        if ak != self.access_key {
            return Err(AuthError::UnknownAccessKey(ak.to_owned()));
        }
        let given = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map_err(|_| AuthError::BadSignature)?;
        let mut mac = hmac_of(&self.secret_key);
        mac.update(&content(cmd));
        // Constant-time comparison.
        mac.verify_slice(&given)
            .map_err(|_| AuthError::BadSignature)
    }
}

impl Credentials {
    /// The signature of `content` (base64 HMAC-SHA1 with the secret key).
    #[must_use]
    pub fn sign_bytes(&self, content: &[u8]) -> String {
        signature(content, &self.secret_key)
    }

    /// Whether `sig` is the signature of `content` (compared in constant time).
    #[must_use]
    pub fn verify_bytes(&self, content: &[u8], sig: &str) -> bool {
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            return false;
        };
        let mut mac = hmac_of(&self.secret_key);
        mac.update(content);
        mac.verify_slice(&given).is_ok()
    }
}

/// 16 unpredictable bytes for a connection challenge (`haRequireSignature`): std's
/// per-process random hash keys over a counter and the clock.
#[must_use]
pub fn nonce() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    out
}

fn hmac_of(key: &[u8]) -> Hmac<Sha1> {
    #[allow(clippy::expect_used)]
    <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// What is signed: the header fields (all but `Signature` and `_UNIQUE_KEY_QUERY`) in
/// name order, values only, then the body.
#[must_use]
pub fn content(cmd: &RemotingCommand) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in &cmd.ext_fields {
        if k != SIGNATURE && k != UNIQUE_KEY_QUERY {
            out.extend_from_slice(v.as_bytes());
        }
    }
    for part in &cmd.body {
        out.extend_from_slice(part);
    }
    out
}

/// Base64 of HMAC-SHA1(`secret`, `content`) (RocketMQ's `AclUtils.calSignature`).
#[must_use]
pub fn signature(content: &[u8], secret: &[u8]) -> String {
    let mut mac = hmac_of(secret);
    mac.update(content);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc2202_hmac_sha1() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature(b"what do ya want for nothing?", b"Jefe");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .expect("base64");
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn content_is_sorted_values_then_body() {
        let cmd = RemotingCommand::request(60001)
            .with_ext("role", "master")
            .with_ext("epoch", 3)
            .with_ext(SIGNATURE, "x")
            .with_ext(UNIQUE_KEY_QUERY, "true")
            .with_ext(ACCESS_KEY, "ak")
            .with_body(bytes::Bytes::from_static(b"BODY"));
        // AccessKey < epoch < role (byte order, as Java's TreeMap of ASCII names).
        assert_eq!(content(&cmd), b"ak3masterBODY");
    }

    #[test]
    fn signed_requests_verify_and_tampering_fails() {
        let creds = Credentials::new("ferrocket-operator", b"s3cret").expect("creds");
        let mut cmd = RemotingCommand::request(60001)
            .with_ext("role", "master")
            .with_ext("epoch", 3);
        assert!(matches!(creds.verify(&cmd), Err(AuthError::Unsigned)));
        creds.sign(&mut cmd);
        creds.verify(&cmd).expect("valid");
        let mut changed = cmd.clone();
        changed.ext_fields.insert("epoch".into(), "9".into());
        assert!(matches!(
            creds.verify(&changed),
            Err(AuthError::BadSignature)
        ));
        let other = Credentials::new("ferrocket-operator", b"other").expect("creds");
        assert!(matches!(other.verify(&cmd), Err(AuthError::BadSignature)));
        let stranger = Credentials::new("someone", b"s3cret").expect("creds");
        let mut s = cmd.clone();
        stranger.sign(&mut s);
        assert!(matches!(
            creds.verify(&s),
            Err(AuthError::UnknownAccessKey(_))
        ));
        let mut garbage = cmd;
        garbage.ext_fields.insert(SIGNATURE.into(), "%%%".into());
        assert!(matches!(
            creds.verify(&garbage),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn secrets_come_from_files_trimmed_and_never_print() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("secret");
        std::fs::write(&p, b"  abc\n").expect("write");
        let c = Credentials::from_file("ak", &p).expect("load");
        assert_eq!(c, Credentials::new("ak", b"abc").expect("creds"));
        assert!(!format!("{c:?}").contains("abc"));
        std::fs::write(&p, b"\n").expect("write");
        assert!(Credentials::from_file("ak", &p).is_err());
        assert!(Credentials::from_file("ak", &dir.path().join("none")).is_err());
    }
}
