//! The TLS client settings of `--transport tls`: a rustls `ClientConfig` (ring provider, TLS 1.2
//! and 1.3) trusting the certificates of `--tls-ca` (default: the system's bundle), or, with
//! `--tls-insecure`, trusting any certificate, and the name the server's certificate is checked
//! against (`--tls-server-name`, else the target's address). rustls, not a hand-written TLS: the
//! node uses it already (engine/src/tls.rs), so the generator and the node share one TLS stack
//! and one build of it.
//!
//! `--tls-insecure` exists for benchmarks against self-signed certificates: it still checks the
//! handshake's signatures (so the cost measured is that of a real handshake) but not who signed
//! the certificate nor whom it names.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Debian's bundle of the system's trusted CAs (package ca-certificates): the trust store when
/// `--tls-ca` is not given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How TLS connections are made: the configuration and the name the certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// What the command line says about TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `--tls-ca FILE`: PEM certificates to trust (default [`SYSTEM_CA_BUNDLE`]).
    pub ca: Option<String>,
    /// `--tls-insecure`: trust any certificate.
    pub insecure: bool,
    /// `--tls-server-name NAME`: the name checked (and sent as SNI when it is a DNS name).
    pub server_name: Option<String>,
    /// `--tls-resumption`: resume sessions (tickets or IDs) on new connections; off by default,
    /// so that each handshake with `--connection-per-request` is a full one.
    pub resumption: bool,
}

impl TlsOptions {
    /// The client for connections to `target`.
    pub fn client(&self, target: SocketAddr) -> Result<TlsClient, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        } else {
            let path = self.ca.as_deref().unwrap_or(SYSTEM_CA_BUNDLE);
            builder
                .with_root_certificates(trust_store(path)?)
                .with_no_client_auth()
        };
        if !self.resumption {
            config.resumption = Resumption::disabled();
        }
        let server_name = match &self.server_name {
            Some(name) => ServerName::try_from(name.clone())
                .map_err(|_| format!("--tls-server-name: not a DNS name or address: {name}"))?,
            None => ServerName::IpAddress(target.ip().into()),
        };
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// The certificates of a PEM file, as a trust store; an error names the file and says what is
/// wrong (unreadable, not PEM, no certificate).
fn trust_store(path: &str) -> Result<RootCertStore, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--tls-ca {path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-ca {path}: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(format!("--tls-ca {path}: no usable certificate"));
    }
    Ok(roots)
}

/// `--tls-insecure`: accepts any certificate for any name, but checks the handshake signatures
/// with the provider's algorithms (the server must hold the key of the certificate it sent).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
