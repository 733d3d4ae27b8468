//! TLS on the remoting ports (rustls with the `ring` provider), in RocketMQ's three
//! modes (`tls.server.mode`): `disabled`, `permissive` (TLS and plain connections on
//! one port: a connection whose first byte is a TLS handshake record, 0x16, is TLS — a
//! RocketMQ frame never starts with it, its length would exceed any frame limit) and
//! `enforcing` (TLS only). The server's certificate and key are PEM files, re-read when
//! they change (checked at most once a second, on a new connection); with a trust file
//! for clients, client certificates are required (mutual TLS).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tracing::{info, warn};

/// RocketMQ's `tls.server.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain connections only.
    #[default]
    Disabled,
    /// TLS and plain connections on the same port.
    Permissive,
    /// TLS connections only.
    Enforcing,
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "disabled" => Ok(TlsMode::Disabled),
            "permissive" => Ok(TlsMode::Permissive),
            "enforcing" => Ok(TlsMode::Enforcing),
            other => Err(format!(
                "`{other}` is not disabled, permissive or enforcing"
            )),
        }
    }
}

/// TLS files that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no usable PEM item.
    #[error("TLS file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificates or key.
    #[error("TLS: {0}")]
    Rustls(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in it"));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| TlsError::Rustls(e.to_string()))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// With it: clients must present a certificate this file's CAs signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    fn modified(&self) -> Vec<Option<SystemTime>> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let chain = certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| file_err(&self.key, e))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// A port's TLS: its mode and the acceptor of the files in force.
pub struct TlsServer {
    mode: TlsMode,
    files: ServerFiles,
    current: RwLock<(Vec<Option<SystemTime>>, tokio_rustls::TlsAcceptor)>,
    checked: Mutex<Instant>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("mode", &self.mode)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads the files.
    ///
    /// # Errors
    /// [`TlsError`].
    pub fn load(mode: TlsMode, files: ServerFiles) -> Result<Self, TlsError> {
        let acceptor = files.acceptor()?;
        Ok(TlsServer {
            mode,
            current: RwLock::new((files.modified(), acceptor)),
            files,
            checked: Mutex::new(Instant::now()),
        })
    }

    /// The mode.
    #[must_use]
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The acceptor in force; re-reads the files first when they changed (at most
    /// once a second). A changed pair that does not load keeps the old one (WARN).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let due = {
            let mut c = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            let due = c.elapsed() >= Duration::from_secs(1);
            if due {
                *c = Instant::now();
            }
            due
        };
        if due {
            let now = self.files.modified();
            let changed = self.current.read().unwrap_or_else(|p| p.into_inner()).0 != now;
            if changed {
                match self.files.acceptor() {
                    Ok(a) => {
                        info!(cert = %self.files.cert.display(), "TLS certificate changed: reloaded");
                        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (now, a);
                    }
                    Err(e) => {
                        warn!(error = %e, "TLS files changed but cannot be used; the previous certificate stays");
                        self.current.write().unwrap_or_else(|p| p.into_inner()).0 = now;
                    }
                }
            }
        }
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Whether the connection speaks TLS: always in `enforcing`, never in `disabled`;
    /// in `permissive`, when its first byte is a TLS handshake record (waiting at most
    /// `wait` for one; a silent connection is plain).
    pub async fn wants_tls(&self, stream: &TcpStream, wait: Duration) -> bool {
        match self.mode {
            TlsMode::Disabled => false,
            TlsMode::Enforcing => true,
            TlsMode::Permissive => {
                let mut b = [0u8; 1];
                matches!(
                    tokio::time::timeout(wait, stream.peek(&mut b)).await,
                    Ok(Ok(1)) if b[0] == 0x16
                )
            }
        }
    }
}

/// Checks a server certificate's chain, validity and signatures as WebPKI does, but
/// not that it names the address dialled (see [`TlsClient::load_peer`]).
#[derive(Debug)]
struct AnyNameVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A byte stream of either kind: plain TCP or TLS over it.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin> Stream for T {}

/// A connection as a port serves it after its TLS decision.
pub type BoxStream = Box<dyn Stream>;

/// A connection after a port's TLS decision. A plain one stays a `TcpStream`, so a
/// server can split it into owned halves (no lock between a reader and a writer task).
pub enum Accepted {
    /// No TLS.
    Plain(TcpStream),
    /// A TLS session.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Accepted {
    /// Either kind as one type (for request-response servers).
    #[must_use]
    pub fn boxed(self) -> BoxStream {
        match self {
            Accepted::Plain(s) => Box::new(s),
            Accepted::Tls(s) => s,
        }
    }
}

/// Accepts `tcp` on a port whose TLS is `tls`: a TLS session when the mode asks for one
/// (see [`TlsServer::wants_tls`], waiting at most `wait` for a first byte; the
/// handshake must end within `handshake`), otherwise the plain stream.
///
/// # Errors
/// A failed or late handshake (a plain peer on an `enforcing` port, an untrusted client
/// certificate).
pub async fn accept(
    tls: Option<&TlsServer>,
    tcp: TcpStream,
    wait: Duration,
    handshake: Duration,
) -> std::io::Result<Accepted> {
    match tls {
        Some(t) if t.wants_tls(&tcp, wait).await => {
            let s = tokio::time::timeout(handshake, t.acceptor().accept(tcp))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake in time")
                })??;
            Ok(Accepted::Tls(Box::new(s)))
        }
        _ => Ok(Accepted::Plain(tcp)),
    }
}

/// How long a permissive replication port (HA, DLedger) waits for a silent
/// connection's TLS handshake before taking it as plain: a slave or member that must
/// answer a challenge first waits for the server to speak.
pub const REPLICATION_PLAIN_AFTER: Duration = Duration::from_millis(500);

/// The longest TLS handshake a replication port waits for.
pub const REPLICATION_HANDSHAKE: Duration = Duration::from_secs(5);

/// Opens `tcp` (connected to `addr`) as `tls` says: TLS when configured, else plain.
///
/// # Errors
/// A failed handshake.
pub async fn connect(
    tls: Option<&TlsClient>,
    addr: &str,
    tcp: TcpStream,
) -> std::io::Result<BoxStream> {
    match tls {
        Some(t) => {
            let s = tokio::time::timeout(Duration::from_secs(10), t.connect(addr, tcp))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(Box::new(s))
        }
        None => Ok(Box::new(tcp)),
    }
}

/// The client side: whom to trust, and the client's own certificate for mutual TLS.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the CAs in `trust` (PEM); with `identity` (certificate, key), presents it.
    ///
    /// # Errors
    /// [`TlsError`].
    pub fn load(trust: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        Self::build(trust, identity, false)
    }

    /// For a group's own members (a slave to its master's HA port, Raft members to
    /// each other): the peer's certificate must chain to a CA of `trust` and be valid
    /// now, but need not name the address dialled — members are reached by pod IP
    /// addresses no certificate issued in advance can list. Use a CA that signs only
    /// the group's (or the cluster's) brokers.
    ///
    /// # Errors
    /// [`TlsError`].
    pub fn load_peer(trust: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        Self::build(trust, identity, true)
    }

    fn build(
        trust: &Path,
        identity: Option<(&Path, &Path)>,
        any_name: bool,
    ) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = if any_name {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(trust)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyNameVerifier(inner)))
        } else {
            builder.with_root_certificates(roots(trust)?)
        };
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    certs(cert)?,
                    PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?,
                )
                .map_err(|e| TlsError::Rustls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Opens TLS over `tcp` to `addr` (`host:port`; an IP host is checked against the
    /// certificate's IP addresses, a name against its DNS names).
    ///
    /// # Errors
    /// A handshake failure (an untrusted or expired certificate, a plain server).
    pub async fn connect(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned()).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?,
        };
        self.connector.connect(name, tcp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a leaf for `name` it signed, written under `dir` as `<tag>-*.pem`.
    fn pki(dir: &Path, tag: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let p = |s: &str| dir.join(format!("{tag}-{s}.pem"));
        std::fs::write(p("ca"), ca.pem()).unwrap();
        std::fs::write(p("cert"), leaf.pem()).unwrap();
        std::fs::write(p("key"), key.serialize_pem()).unwrap();
        (p("ca"), p("cert"), p("key"))
    }

    async fn handshake(server: &TlsServer, client: &TlsClient) -> bool {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let acceptor = server.acceptor();
        let srv = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let _ = acceptor.accept(s).await;
        });
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let ok = client.connect(&addr, tcp).await.is_ok();
        let _ = srv.await;
        ok
    }

    /// A peer connection checks the chain but not the name (members are dialled by IP
    /// address); a client connection checks both.
    #[tokio::test]
    async fn peers_need_the_groups_ca_but_not_a_matching_name() {
        let dir = tempfile::tempdir().unwrap();
        // A certificate naming a pod DNS name, dialled at 127.0.0.1.
        let (ca, cert, key) = pki(dir.path(), "group", "broker-a-0.broker-a-headless");
        let (other_ca, _, _) = pki(dir.path(), "other", "x");
        let server = TlsServer::load(
            TlsMode::Enforcing,
            ServerFiles {
                cert,
                key,
                client_ca: None,
            },
        )
        .unwrap();
        assert!(handshake(&server, &TlsClient::load_peer(&ca, None).unwrap()).await);
        assert!(!handshake(&server, &TlsClient::load(&ca, None).unwrap()).await);
        assert!(!handshake(&server, &TlsClient::load_peer(&other_ca, None).unwrap()).await);
    }
}
