//! `kfp-certs`: the server's TLS material. It owns the rustls `ServerConfig` (ALPN h2 and
//! http/1.1, as the aggregator uses HTTP/2 when offered), a certificate resolver that reloads
//! rotated certificate files for new connections without a restart, and the self-signed CA and
//! serving certificate `serve --dev` creates. No HTTP here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Certificate problems.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Generating a development certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads a certificate chain and private key from PEM files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| Error::Pem {
            path: cert.to_owned(),
            message: e.to_string(),
        })?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Pem {
            path: cert.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: cert.to_owned(),
            message: "no certificate found".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::Pem {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let signing = any_supported_type(&key_der)?;
    Ok(CertifiedKey::new(certs, signing))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Serves the certificate in two PEM files and reloads them when they change (checked at most
/// once a second, on handshakes). A rotation that leaves unreadable files keeps the old
/// certificate and logs why.
pub struct ReloadingResolver {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl std::fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingResolver {
    /// Loads the files now; fails if they are not usable.
    pub fn new(cert: &Path, key: &Path) -> Result<Self> {
        let current = Arc::new(load_certified_key(cert, key)?);
        Ok(ReloadingResolver {
            cert: cert.to_owned(),
            key: key.to_owned(),
            state: Mutex::new(State {
                current,
                stamps: (modified(cert), modified(key)),
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate new connections get, reloading first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked.elapsed() >= Duration::from_secs(1) {
            st.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != st.stamps {
                match load_certified_key(&self.cert, &self.key) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                        st.current = Arc::new(k);
                        st.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "serving certificate changed but cannot be loaded; keeping the old one")
                    }
                }
            }
        }
        st.current.clone()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server's TLS configuration: TLS 1.2 and 1.3, ALPN h2 then http/1.1, no client
/// certificates requested yet (the delegated-authentication issue adds client CAs).
pub fn server_config(resolver: Arc<ReloadingResolver>) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Files of a development CA and serving certificate.
#[derive(Clone, Debug)]
pub struct DevCerts {
    /// The CA certificate (PEM), for kubeconfigs and clients.
    pub ca_cert: PathBuf,
    /// The serving certificate (PEM).
    pub cert: PathBuf,
    /// The serving key (PEM).
    pub key: PathBuf,
}

/// Creates (once) a self-signed CA and a serving certificate for `localhost`, `127.0.0.1` and
/// `::1` in `dir`; later calls reuse the files so kubeconfigs stay valid across restarts.
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCerts> {
    let certs = DevCerts {
        ca_cert: dir.join("ca.crt"),
        cert: dir.join("serving.crt"),
        key: dir.join("serving.key"),
    };
    if certs.ca_cert.exists() && certs.cert.exists() && certs.key.exists() {
        return Ok(certs);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kfp-apiserver development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv4Addr::LOCALHOST.into(),
    ));
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv6Addr::LOCALHOST.into(),
    ));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kfp-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    write_private(&certs.key, key.serialize_pem().as_bytes())?;
    std::fs::write(&certs.cert, cert.pem()).map_err(io(&certs.cert))?;
    std::fs::write(&certs.ca_cert, ca.pem()).map_err(io(&certs.ca_cert))?;
    Ok(certs)
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(data).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kfp-certs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn dev_certs_are_created_once_and_load() {
        let dir = tmp("dev");
        let a = ensure_dev_certs(&dir).unwrap();
        let first = std::fs::read(&a.cert).unwrap();
        let b = ensure_dev_certs(&dir).unwrap();
        assert_eq!(
            std::fs::read(&b.cert).unwrap(),
            first,
            "reused, not regenerated"
        );
        let resolver = Arc::new(ReloadingResolver::new(&a.cert, &a.key).unwrap());
        server_config(resolver).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotated_files_are_picked_up_and_broken_ones_ignored() {
        let dir1 = tmp("rot1");
        let dir2 = tmp("rot2");
        let one = ensure_dev_certs(&dir1).unwrap();
        let two = ensure_dev_certs(&dir2).unwrap();
        let live = tmp("live");
        std::fs::create_dir_all(&live).unwrap();
        let (cert, key) = (live.join("tls.crt"), live.join("tls.key"));
        std::fs::copy(&one.cert, &cert).unwrap();
        std::fs::copy(&one.key, &key).unwrap();
        let r = ReloadingResolver::new(&cert, &key).unwrap();
        let before = r.current().cert[0].clone();
        // A broken rotation keeps the old certificate.
        std::fs::write(&cert, b"not a certificate").unwrap();
        r.state.lock().unwrap().checked = Instant::now() - Duration::from_secs(5);
        assert_eq!(r.current().cert[0], before);
        // A good one replaces it.
        std::fs::copy(&two.cert, &cert).unwrap();
        std::fs::copy(&two.key, &key).unwrap();
        {
            let mut st = r.state.lock().unwrap();
            st.checked = Instant::now() - Duration::from_secs(5);
            st.stamps = (None, None);
        }
        assert_ne!(r.current().cert[0], before);
        for d in [dir1, dir2, live] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

// === client certificates ===

/// Which trust bundle a client certificate chains to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCa {
    /// `--client-ca-file`: x509 client authentication (CN = user, O = groups).
    Client,
    /// `--requestheader-client-ca-file`: the front proxy (the aggregator), whose requests carry
    /// the user in `X-Remote-*` headers.
    RequestHeader,
}

/// A verified client certificate: which bundles it chains to and its subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The bundles it chains to (request-header first).
    pub cas: Vec<ClientCa>,
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organizations.
    pub organizations: Vec<String>,
    /// The end of its validity.
    pub not_after: SystemTime,
    /// [`ClientCas::generation`] when it was classified: a request on a connection whose
    /// identity is of an older generation is classified again (a CA that left a bundle stops
    /// counting on open connections too, as kube-apiserver verifies per request).
    pub generation: u64,
}

fn load_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>> {
    let pem = std::fs::read(path).map_err(io(path))?;
    roots_from_pem(&pem, path)
}

/// The CA certificates in `pem`; an error names `origin` (a file, or where the text came from).
fn roots_from_pem(pem: &[u8], origin: &Path) -> Result<Arc<rustls::RootCertStore>> {
    let bad = |message: String| Error::Pem {
        path: origin.to_owned(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        roots.add(c.map_err(|e| bad(e.to_string()))?)?;
    }
    if roots.is_empty() {
        return Err(bad("no CA certificate found".into()));
    }
    Ok(Arc::new(roots))
}

type Verifier = Arc<dyn rustls::server::danger::ClientCertVerifier>;

fn verifier_for(roots: Arc<rustls::RootCertStore>) -> Result<Verifier> {
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots,
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))
}

/// A CA bundle: either a PEM file, reloaded when the file changes (checked at most once a
/// second; a changed file that cannot be loaded keeps the old bundle and logs why), or PEM text
/// set by its owner ([`ReloadingCaBundle::set_pem`]: the `extension-apiserver-authentication`
/// ConfigMap). A bundle set from text may be empty: then it trusts no certificate.
pub struct ReloadingCaBundle {
    /// The file, or `None` for a bundle whose text is set by its owner.
    path: Option<PathBuf>,
    state: Mutex<BundleState>,
    /// Bumped at every change of content.
    generation: std::sync::atomic::AtomicU64,
}

struct BundleState {
    /// `None`: an empty bundle.
    verifier: Option<Verifier>,
    /// The file's modification time when it was loaded.
    stamp: Option<SystemTime>,
    /// The last look at the file.
    checked: Instant,
    /// The text it was set from (bundles set from text), to skip identical updates.
    pem: String,
}

impl std::fmt::Debug for ReloadingCaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCaBundle")
            .field("path", &self.path)
            .finish()
    }
}

impl ReloadingCaBundle {
    /// Loads the bundle in `path` now; fails if it holds no usable CA.
    pub fn new(path: &Path) -> Result<Self> {
        let v = verifier_for(load_roots(path)?)?;
        Ok(ReloadingCaBundle {
            generation: Default::default(),
            path: Some(path.to_owned()),
            state: Mutex::new(BundleState {
                verifier: Some(v),
                stamp: modified(path),
                checked: Instant::now(),
                pem: String::new(),
            }),
        })
    }

    /// A bundle from PEM text (empty text: a bundle that trusts nothing until set).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let b = ReloadingCaBundle {
            generation: Default::default(),
            path: None,
            state: Mutex::new(BundleState {
                verifier: None,
                stamp: None,
                checked: Instant::now(),
                pem: String::new(),
            }),
        };
        b.set_pem(pem)?;
        Ok(b)
    }

    /// Replaces a text bundle's content (empty text empties it); returns whether it changed.
    /// Text that holds no usable CA is refused and the bundle keeps what it had. A file bundle
    /// is not changed by this (it follows its file).
    pub fn set_pem(&self, pem: &str) -> Result<bool> {
        if let Some(path) = &self.path {
            return Err(Error::Pem {
                path: path.clone(),
                message: "a file bundle follows its file; it is not set from text".into(),
            });
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.pem == pem && (st.verifier.is_some() || pem.trim().is_empty()) {
            return Ok(false);
        }
        st.verifier = if pem.trim().is_empty() {
            None
        } else {
            Some(verifier_for(roots_from_pem(
                pem.as_bytes(),
                Path::new("(CA bundle text)"),
            )?)?)
        };
        st.pem = pem.to_owned();
        self.bump();
        Ok(true)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// A number that changes whenever the content does (a file bundle looks at its file first,
    /// at most once a second).
    pub fn generation(&self) -> u64 {
        drop(self.verifier());
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn verifier(&self) -> Option<Verifier> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.path
            && st.checked.elapsed() >= Duration::from_secs(1)
        {
            st.checked = Instant::now();
            let stamp = modified(path);
            if stamp != st.stamp {
                match load_roots(path).and_then(verifier_for) {
                    Ok(v) => {
                        tracing::info!(ca = %path.display(), "client CA bundle reloaded");
                        st.verifier = Some(v);
                        st.stamp = stamp;
                        self.bump();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "client CA bundle changed but cannot be loaded; keeping the old one")
                    }
                }
            }
        }
        st.verifier.clone()
    }

    fn verifies(&self, chain: &[CertificateDer<'_>], now: rustls::pki_types::UnixTime) -> bool {
        let Some((end, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verifier()
            .is_some_and(|v| v.verify_client_cert(end, intermediates, now).is_ok())
    }
}

/// The client-certificate trust of the server: the client CA and the request-header CA, both
/// optional, both reloading.
#[derive(Debug, Default)]
pub struct ClientCas {
    /// `--client-ca-file`.
    pub client: Option<ReloadingCaBundle>,
    /// `--requestheader-client-ca-file`.
    pub request_header: Option<ReloadingCaBundle>,
}

impl ClientCas {
    fn bundles(&self) -> impl Iterator<Item = (ClientCa, &ReloadingCaBundle)> {
        self.request_header
            .iter()
            .map(|b| (ClientCa::RequestHeader, b))
            .chain(self.client.iter().map(|b| (ClientCa::Client, b)))
    }

    /// Changes whenever either bundle's content does.
    pub fn generation(&self) -> u64 {
        self.bundles().map(|(_, b)| b.generation()).sum()
    }

    /// Which bundles a presented chain (leaf first) verifies against now, and its subject;
    /// `None` when it verifies against none or cannot be parsed.
    pub fn classify(&self, chain: &[CertificateDer<'_>]) -> Option<ClientIdentity> {
        // Read before verifying: a change during it makes the result look old, never new.
        let generation = self.generation();
        let now = rustls::pki_types::UnixTime::now();
        let cas: Vec<ClientCa> = self
            .bundles()
            .filter(|(_, b)| b.verifies(chain, now))
            .map(|(k, _)| k)
            .collect();
        if cas.is_empty() {
            return None;
        }
        let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let organizations = subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_owned)
            .collect();
        let secs = cert.validity().not_after.timestamp().max(0) as u64;
        Some(ClientIdentity {
            cas,
            common_name,
            organizations,
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            generation,
        })
    }
}

/// Requests a client certificate (never requires one) and accepts it when it chains to either
/// bundle; a connection without one goes on to bearer tokens.
#[derive(Debug)]
struct EitherCa(Arc<ClientCas>);

impl rustls::server::danger::ClientCertVerifier for EitherCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // No hints: clients send the certificate they have, and the bundles may be reloaded.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no client CA is configured".into());
        for (_, b) in self.0.bundles() {
            let Some(v) = b.verifier() else { continue };
            match v.verify_client_cert(end_entity, intermediates, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// [`server_config`] that also requests client certificates, verified against `cas` (when it
/// has any bundle).
pub fn server_config_with_client_cas(
    resolver: Arc<ReloadingResolver>,
    cas: Arc<ClientCas>,
) -> Result<Arc<rustls::ServerConfig>> {
    if cas.client.is_none() && cas.request_header.is_none() {
        return server_config(resolver);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(EitherCa(cas)))
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod client_ca_tests {
    use super::*;

    fn ca(name: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let pem = p.self_signed(&key).unwrap().pem();
        (rcgen::Issuer::new(p, key), pem)
    }

    fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, cn: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "team-a");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key, issuer).unwrap().der().clone()
    }

    #[test]
    fn classifies_by_bundle_and_reloads_a_rotated_bundle() {
        let dir = std::env::temp_dir().join(format!("kfp-certs-client-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (front, front_pem) = ca("front");
        let (client, client_pem) = ca("client");
        let (next, next_pem) = ca("next client CA");
        let front_file = dir.join("front.crt");
        let client_file = dir.join("client.crt");
        std::fs::write(&front_file, &front_pem).unwrap();
        std::fs::write(&client_file, &client_pem).unwrap();
        let cas = ClientCas {
            client: Some(ReloadingCaBundle::new(&client_file).unwrap()),
            request_header: Some(ReloadingCaBundle::new(&front_file).unwrap()),
        };
        let id = cas.classify(&[leaf(&front, "front-proxy-client")]).unwrap();
        assert_eq!(id.cas, [ClientCa::RequestHeader]);
        assert_eq!(id.common_name, "front-proxy-client");
        let id = cas.classify(&[leaf(&client, "carol")]).unwrap();
        assert_eq!(
            (id.cas.as_slice(), id.organizations.as_slice()),
            (&[ClientCa::Client][..], &["team-a".to_owned()][..])
        );
        assert_eq!(cas.classify(&[leaf(&next, "x")]), None, "not trusted yet");
        // Rotation: the client CA file now holds the next CA (checked at most once a second).
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(&client_file, &next_pem).unwrap();
        let id = cas.classify(&[leaf(&next, "dave")]).unwrap();
        assert_eq!(
            id.cas,
            [ClientCa::Client],
            "the rotated bundle is used without a restart"
        );
        assert_eq!(
            cas.classify(&[leaf(&client, "carol")]),
            None,
            "the old CA is gone"
        );
        // A broken rewrite keeps the bundle that works.
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(&client_file, "not a certificate").unwrap();
        assert!(cas.classify(&[leaf(&next, "dave")]).is_some());
        assert!(ReloadingCaBundle::new(&client_file).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_text_bundle_starts_empty_and_follows_what_it_is_set_to() {
        let (front, front_pem) = ca("front");
        let (next, next_pem) = ca("next front");
        let cas = ClientCas {
            client: None,
            request_header: Some(ReloadingCaBundle::from_pem("").unwrap()),
        };
        let bundle = cas.request_header.as_ref().unwrap();
        assert_eq!(
            cas.classify(&[leaf(&front, "p")]),
            None,
            "empty trusts nothing"
        );
        let g = cas.generation();
        assert!(bundle.set_pem(&front_pem).unwrap(), "changed");
        assert_ne!(cas.generation(), g, "a change is a new generation");
        let g = cas.generation();
        assert!(!bundle.set_pem(&front_pem).unwrap(), "the same text again");
        assert_eq!(cas.generation(), g, "no change, same generation");
        assert_eq!(
            cas.classify(&[leaf(&front, "p")]).unwrap().cas,
            [ClientCa::RequestHeader]
        );
        assert!(bundle.set_pem("garbage").is_err(), "refused");
        assert!(
            cas.classify(&[leaf(&front, "p")]).is_some(),
            "a refused text keeps what worked"
        );
        bundle.set_pem(&format!("{front_pem}{next_pem}")).unwrap();
        assert!(
            cas.classify(&[leaf(&next, "p")]).is_some(),
            "both in a bundle"
        );
        bundle.set_pem("").unwrap();
        assert_eq!(cas.classify(&[leaf(&front, "p")]), None, "emptied");
        let file = ReloadingCaBundle::new(&{
            let f = std::env::temp_dir().join(format!("kfp-certs-text-{}.crt", std::process::id()));
            std::fs::write(&f, &front_pem).unwrap();
            f
        })
        .unwrap();
        assert!(
            file.set_pem(&next_pem).is_err(),
            "a file bundle follows its file"
        );
    }
}
