//! Certificates made in the test (rcgen): a CA, and certificates it signs for chosen names,
//! valid now or expired, or self-signed ones, written as PEM files for the node's
//! `tls-certificates-*` keys, with rustls configurations for the test's own peers.
//!
//! Not part of `support/mod.rs` (which is standard library only): a test that needs it says
//! `#[path = "support/certs.rs"] mod certs;`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A test certificate authority.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// When a certificate is valid.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Now,
    /// Expired in 2021.
    Expired,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    /// The chain, leaf first (with the CA when one signed it).
    pub chain_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sipshard test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[&str], validity: Validity) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params(names, validity)
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client configuration trusting this CA only, presenting `own` if given.
    pub fn client_config(&self, own: Option<&Leaf>) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(self.roots());
        Arc::new(match own {
            Some(own) => builder
                .with_client_auth_cert(own.chain(), own.key())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        })
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der()).expect("CA into the root store");
        roots
    }
}

/// A self-signed certificate for `names`: no CA vouches for it.
pub fn self_signed(names: &[&str]) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let cert = params(names, Validity::Now)
        .self_signed(&key)
        .expect("self-signed certificate");
    Leaf {
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn params(names: &[&str], validity: Validity) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("certificate params");
    if validity == Validity::Expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    params
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Leaf {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain PEM")
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM")
    }

    /// Writes `NAME.pem` (the chain) and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let chain = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&chain, &self.chain_pem).expect("write the chain");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        (chain, key)
    }

    /// A server configuration presenting this certificate, asking no client certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(self.chain(), self.key())
                .expect("server certificate"),
        )
    }
}
