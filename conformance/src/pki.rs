//! Certificates for the suites, made with rcgen: CAs, client certificates (the front proxy's,
//! x509 users', expired ones) and serving certificates for `localhost` / 127.0.0.1, plus a
//! rustls client configuration from PEM. Test material only: keys are generated per run and
//! never written outside the tests' temporary directories.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA: its issuer (to sign with) and its certificate as PEM.
pub struct Ca {
    /// Signs certificates.
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM).
    pub pem: String,
}

/// A new self-signed CA named `name`.
pub fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = p.self_signed(&key).expect("self-signed");
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// A client certificate (PEM chain, PEM key) signed by `ca`, CN `cn`, O `orgs`; `expired`
/// makes its validity end in the past.
pub fn client(ca: &Ca, cn: &str, orgs: &[&str], expired: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = p.signed_by(&key, &ca.issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// A serving certificate for `localhost` and 127.0.0.1 (PEM chain, PEM key) signed by `ca`.
pub fn serving(ca: &Ca, cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    p.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv4Addr::LOCALHOST.into(),
    ));
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &ca.issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// A rustls client configuration trusting `server_ca_pem`, presenting `cert` (PEM chain, PEM
/// key) when given, offering `alpn`.
pub fn client_config(
    server_ca_pem: &str,
    cert: Option<&(String, String)>,
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server_ca_pem.as_bytes()) {
        roots.add(c.expect("CA certificate")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match cert {
        Some((chain, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(|c| c.expect("cert"))
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A rustls server configuration serving `cert` (PEM chain, PEM key) over HTTP/1.1.
pub fn server_config(cert: &(String, String)) -> rustls::ServerConfig {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.0.as_bytes())
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("serving certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}
