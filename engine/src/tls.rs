//! TLS for `sips:` and `transport=tls` listens: the server's certificate and key, loaded once
//! at start-up from Flexisip's keys, and the rustls configuration every shard shares.
//!
//! The certificate chain and key are PEM, as Flexisip reads them: either
//! `[global] tls-certificates-file` (the chain, leaf first) with `tls-certificates-private-key`,
//! or `tls-certificates-dir` holding `agent.pem` (the chain and the key in one file). A file that
//! cannot be read, holds no certificate or no key, or a key that does not match the certificate
//! stops the node with one line naming the file.
//!
//! TLS 1.3 and 1.2 (rustls's ring provider). Session resumption: a bounded stateful session
//! cache shared by the shards (TLS 1.2 session ids, TLS 1.3 tickets that name a cache entry), so
//! no ticket key has to be rotated or shared. Client certificates are asked for and verified
//! only with `tls-verify-incoming` (mutual TLS between cluster nodes).
//!
//! The shards accept TCP, run the handshake (bounded by [`HANDSHAKE_TIMEOUT`]) with
//! futures-rustls over glommio's stream, then serve the connection exactly like a TCP one.
//!
//! Outgoing TLS (a request for a `sips:` or `transport=tls` target with no open connection) is
//! always verified (RFC 5922 §7.2): a chain to a CA of `tls-certificates-ca-file` (or the
//! system's store), valid now, whose SubjectAltName names the target. Targets are IP literals
//! (sipshard does no DNS yet), so the name checked is the address. The node presents its own
//! certificate when it has one, for peers that ask (mutual TLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::Config;

/// How long a client has, from the TCP accept, to complete the TLS handshake; then the
/// connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS sessions remembered for resumption (all shards together).
const SESSION_CACHE_ENTRIES: usize = 16_384;

/// The certificate file Flexisip reads in `tls-certificates-dir`.
pub const AGENT_PEM: &str = "agent.pem";

/// Debian's bundle of the system's trusted CAs (package ca-certificates).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The node's certificate chain (leaf first) and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Reads the certificate chain and key named by `files`.
pub fn identity(files: &TlsFiles) -> Result<Identity, String> {
    Ok(Identity {
        chain: read_certificates(&files.certificates)?,
        key: read_key(&files.key)?,
    })
}

/// The CAs trusted for peers' certificates: `tls-certificates-ca-file`, else the system's
/// bundle. An unreadable named file stops the node; a system without a bundle trusts nobody
/// (every outgoing TLS connection fails, with a warning now).
pub fn trust_store(config: &Config) -> Result<Arc<RootCertStore>, String> {
    let (path, named) = match &config.global.tls_certificates_ca_file {
        Some(path) => (path.as_path(), true),
        None => (Path::new(SYSTEM_CA_BUNDLE), false),
    };
    let mut roots = RootCertStore::empty();
    match CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
    {
        Ok(certificates) => {
            let (_, unusable) = roots.add_parsable_certificates(certificates);
            if unusable > 0 {
                tracing::warn!("{}: {unusable} certificates skipped", path.display());
            }
        }
        Err(e) if named => {
            return Err(format!(
                "[global] tls-certificates-ca-file {}: {}",
                path.display(),
                pem_error(e)
            ));
        }
        Err(e) => tracing::warn!(
            "no trusted CAs ({SYSTEM_CA_BUNDLE}: {}): outgoing TLS connections will fail; \
             set [global] tls-certificates-ca-file",
            pem_error(e)
        ),
    }
    Ok(Arc::new(roots))
}

/// The configuration of outgoing TLS connections: peers verified against `roots`, and `own`
/// certificate presented to those that ask for one.
pub fn client_config(
    roots: Arc<RootCertStore>,
    own: Option<&Identity>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match own {
        Some(own) => builder
            .with_client_auth_cert(own.chain.clone(), own.key.clone_key())
            .map_err(|e| format!("TLS client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name an outgoing connection to `addr` must present (see the module docs).
pub fn server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// Where the certificate chain and the key are, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificates: PathBuf,
    pub key: PathBuf,
}

/// The files named by `[global]`: `tls-certificates-file` and `tls-certificates-private-key`
/// when set (both, or neither), else `tls-certificates-dir`/agent.pem for both.
pub fn files(config: &Config) -> Result<TlsFiles, String> {
    let g = &config.global;
    match (&g.tls_certificates_file, &g.tls_certificates_private_key) {
        (Some(certificates), Some(key)) => Ok(TlsFiles {
            certificates: certificates.clone(),
            key: key.clone(),
        }),
        (Some(_), None) => Err(
            "[global] tls-certificates-file is set without tls-certificates-private-key; set both"
                .into(),
        ),
        (None, Some(_)) => Err(
            "[global] tls-certificates-private-key is set without tls-certificates-file; set both"
                .into(),
        ),
        (None, None) => match &g.tls_certificates_dir {
            Some(dir) => {
                let agent = dir.join(AGENT_PEM);
                Ok(TlsFiles {
                    certificates: agent.clone(),
                    key: agent,
                })
            }
            None => Err(
                "a TLS transport needs [global] tls-certificates-dir (holding agent.pem) \
                 or tls-certificates-file and tls-certificates-private-key"
                    .into(),
            ),
        },
    }
}

/// The server's configuration for every shard, presenting `own` (read from `files`). With
/// `client_roots`, clients must present a certificate chaining to one of them.
pub fn server_config(
    files: &TlsFiles,
    own: &Identity,
    client_roots: Option<Arc<RootCertStore>>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("[global] tls-verify-incoming: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(own.chain.clone(), own.key.clone_key())
        .map_err(|e| {
            format!(
                "[global] TLS certificate {} and key {}: {e}",
                files.certificates.display(),
                files.key.display()
            )
        })?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(Arc::new(config))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("[global] TLS certificate file {shown}: {}", pem_error(e)))?;
    if chain.is_empty() {
        return Err(format!(
            "[global] TLS certificate file {shown}: no PEM CERTIFICATE in it"
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "[global] TLS private key file {}: no PEM private key in it",
            path.display()
        ),
        e => format!(
            "[global] TLS private key file {}: {}",
            path.display(),
            pem_error(e)
        ),
    })
}

fn pem_error(e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        e => format!("not valid PEM: {e}"),
    }
}

/// The names (host names or IP addresses) among `names` that the certificate's SubjectAltNames
/// do not cover (RFC 5922 §7.1: a SIP server's certificate names its domains in
/// SubjectAltName). Checked with rustls's own verifier: dNSName (wildcards included) and
/// iPAddress entries; `sip:` URI entries are not read. `*` and names that are neither a DNS name
/// nor an address are skipped; a certificate that cannot be parsed covers nothing.
pub fn uncovered_names(leaf: &CertificateDer<'_>, names: &[String]) -> Vec<String> {
    let parsed = webpki::EndEntityCert::try_from(leaf).ok();
    let mut uncovered: Vec<String> = Vec::new();
    for name in names {
        let Ok(server_name) = ServerName::try_from(name.as_str()) else {
            continue;
        };
        let covered = parsed
            .as_ref()
            .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&server_name).is_ok());
        if !covered && !uncovered.contains(name) {
            uncovered.push(name.clone());
        }
    }
    uncovered
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names` and its key, as PEM.
    fn certificate(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn files_follow_flexisip_keys() {
        let mut config = Config::default();
        assert_eq!(
            files(&config).unwrap(),
            TlsFiles {
                certificates: "/etc/flexisip/tls/agent.pem".into(),
                key: "/etc/flexisip/tls/agent.pem".into(),
            }
        );
        config.global.tls_certificates_file = Some("/c.pem".into());
        assert!(
            files(&config)
                .unwrap_err()
                .contains("without tls-certificates-private-key")
        );
        config.global.tls_certificates_private_key = Some("/k.pem".into());
        assert_eq!(
            files(&config).unwrap(),
            TlsFiles {
                certificates: "/c.pem".into(),
                key: "/k.pem".into(),
            }
        );
        config.global.tls_certificates_file = None;
        assert!(
            files(&config)
                .unwrap_err()
                .contains("without tls-certificates-file")
        );
        config.global.tls_certificates_private_key = None;
        config.global.tls_certificates_dir = None;
        assert!(files(&config).unwrap_err().contains("needs"));
    }

    #[test]
    fn subject_alt_names_cover_dns_wildcards_and_addresses() {
        let (cert, _) = certificate(&["localhost", "*.example.org", "127.0.0.1"]);
        let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let names: Vec<String> = [
            "localhost",
            "sip.example.org",
            "127.0.0.1",
            "example.org",
            "10.0.0.1",
            "*",
            "10.0.0.1",
        ]
        .iter()
        .map(|n| n.to_string())
        .collect();
        assert_eq!(uncovered_names(&leaf, &names), ["example.org", "10.0.0.1"]);
        let junk = CertificateDer::from(vec![0u8; 8]);
        assert_eq!(
            uncovered_names(&junk, &names[..1]),
            ["localhost"],
            "a certificate that does not parse covers nothing"
        );
    }

    #[test]
    fn agent_pem_holds_chain_and_key() {
        let (cert, key) = certificate(&["localhost"]);
        let dir = std::env::temp_dir().join(format!("sipshard-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let agent = dir.join(AGENT_PEM);
        std::fs::write(&agent, format!("{cert}{key}")).unwrap();
        let files = TlsFiles {
            certificates: agent.clone(),
            key: agent,
        };
        let own = identity(&files).unwrap();
        assert_eq!(own.chain.len(), 1);
        server_config(&files, &own, None).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
