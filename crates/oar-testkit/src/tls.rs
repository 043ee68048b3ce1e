//! HTTPS mode of [`FakeGitlab`]: a throwaway CA, a server certificate for `127.0.0.1` (IP SAN)
//! and `localhost`, and, when client certificates are required, a separate client CA with one
//! client certificate. Everything is generated per server with rcgen and written as PEM files
//! into the server's temp dir, so tests can hand the paths to the runner (`tls-ca-file`,
//! `tls-cert-file`, `tls-key-file`).
//!
//! [`FakeGitlab`]: crate::FakeGitlab

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

/// How [`FakeGitlab::start_tls`] serves HTTPS.
///
/// [`FakeGitlab::start_tls`]: crate::FakeGitlab::start_tls
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Refuse TLS handshakes without a client certificate issued by the server's client CA
    /// (mutual TLS). The certificate and key to present are at
    /// [`FakeGitlab::client_cert_pem_path`] / [`FakeGitlab::client_key_pem_path`].
    ///
    /// [`FakeGitlab::client_cert_pem_path`]: crate::FakeGitlab::client_cert_pem_path
    /// [`FakeGitlab::client_key_pem_path`]: crate::FakeGitlab::client_key_pem_path
    pub require_client_cert: bool,
}

/// Generated PEM files and the acceptor serving with them.
pub(crate) struct TlsMaterial {
    /// CA that issued the server certificate (what clients must trust).
    pub ca_pem: PathBuf,
    /// Client certificate, with mutual TLS.
    pub client_cert_pem: Option<PathBuf>,
    /// Client key (PKCS#8), with mutual TLS.
    pub client_key_pem: Option<PathBuf>,
    /// Server side of the handshake.
    pub acceptor: TlsAcceptor,
}

fn ca_params(name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn leaf_params(
    name: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Subject alternative names of the server certificate: `127.0.0.1`, `localhost` and `host`
/// (the host name or IP put into URLs, IPv6 in brackets).
fn server_sans(host: &str) -> anyhow::Result<Vec<SanType>> {
    let mut sans = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::DnsName("localhost".try_into()?),
    ];
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let extra = match bare.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            bare.to_owned()
                .try_into()
                .with_context(|| format!("host {host:?} is not a valid DNS name"))?,
        ),
    };
    if !sans.contains(&extra) {
        sans.push(extra);
    }
    Ok(sans)
}

/// Generate the certificates into `dir` and build the acceptor; the server certificate is
/// valid for `host` too.
pub(crate) fn generate(dir: &Path, opts: TlsOptions, host: &str) -> anyhow::Result<TlsMaterial> {
    std::fs::create_dir_all(dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let ca = CertifiedIssuer::self_signed(
        ca_params("Oar FakeGitlab test CA")?,
        KeyPair::generate().context("CA key")?,
    )?;
    let server_key = KeyPair::generate().context("server key")?;
    let server_cert = leaf_params(
        "127.0.0.1",
        server_sans(host)?,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?
    .signed_by(&server_key, &ca)?;
    let ca_pem = dir.join("ca.pem");
    write(&ca_pem, &ca.pem())?;

    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (builder, client_cert_pem, client_key_pem) = if opts.require_client_cert {
        let client_ca = CertifiedIssuer::self_signed(
            ca_params("Oar FakeGitlab test client CA")?,
            KeyPair::generate().context("client CA key")?,
        )?;
        let client_key = KeyPair::generate().context("client key")?;
        let client_cert = leaf_params(
            "oar-test-runner",
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?
        .signed_by(&client_key, &client_ca)?;
        let cert_path = dir.join("client.pem");
        let key_path = dir.join("client.key");
        write(&cert_path, &client_cert.pem())?;
        write(&key_path, &client_key.serialize_pem())?;
        write(&dir.join("client-ca.pem"), &client_ca.pem())?;
        let mut roots = RootCertStore::empty();
        roots.add(client_ca.der().clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        (
            builder.with_client_cert_verifier(verifier),
            Some(cert_path),
            Some(key_path),
        )
    } else {
        (builder.with_no_client_auth(), None, None)
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = builder.with_single_cert(vec![server_cert.der().clone()], key)?;
    // hyper serves HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem,
        client_cert_pem,
        client_key_pem,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
