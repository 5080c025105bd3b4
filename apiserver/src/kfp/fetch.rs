//! Downloading a pipeline from `package_url.pipeline_url` (CreatePipelineAndVersion,
//! CreatePipelineVersion) with KFP 2.17's SSRF rules: https only unless http is allowed, default
//! ports only, a domain allow-list with `*` wildcards, and every address the name resolves to
//! must be public (no loopback, private, link-local, metadata or unspecified address) — the
//! connection goes to the address that was checked, so a DNS answer cannot change in between.
//! Redirects are not followed; anything but 200 is a 400. Bounded: 32 MiB and a timeout.
//!
//! Tests on 127.0.0.1 lift the address and port rules with explicit flags.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

use super::error::KfpError;
use super::upload::MAX_FILE_BYTES;

/// What may be downloaded.
#[derive(Clone, Debug)]
pub struct UrlPolicy {
    /// Allow `http://` (KFP: `PIPELINE_URL_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Allowed host names; `*.example.com` matches subdomains; `*` matches every host.
    pub allowed_domains: Vec<String>,
    /// Allow loopback, private and link-local addresses (tests, air-gapped mirrors).
    pub allow_private_addresses: bool,
    /// Allow ports other than 443 / 80.
    pub allow_any_port: bool,
    /// The whole download's deadline (KFP: `PIPELINE_URL_TIMEOUT`, 30 s).
    pub timeout: Duration,
}

impl Default for UrlPolicy {
    fn default() -> Self {
        UrlPolicy {
            allow_http: false,
            allowed_domains: DEFAULT_DOMAINS.iter().map(|d| (*d).to_owned()).collect(),
            allow_private_addresses: false,
            allow_any_port: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// KFP's default allow-list.
pub const DEFAULT_DOMAINS: &[&str] = &[
    "storage.googleapis.com",
    "s3.amazonaws.com",
    "github.com",
    "raw.githubusercontent.com",
];

fn refused(why: impl std::fmt::Display) -> KfpError {
    KfpError::invalid(format!(
        "Failed to download the pipeline from the URL: {why}"
    ))
}

fn domain_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|d| {
        let d = d.to_ascii_lowercase();
        if d == "*" {
            true
        } else if let Some(suffix) = d.strip_prefix("*.") {
            host.ends_with(&format!(".{suffix}"))
        } else {
            host == d
        }
    })
}

/// Whether an address is one a pipeline URL must not reach without `allow_private_addresses`.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 0
                // Carrier-grade NAT 100.64.0.0/10.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// Downloads `url` under `policy`.
pub async fn download(url: &str, policy: &UrlPolicy) -> Result<Vec<u8>, KfpError> {
    tokio::time::timeout(policy.timeout, fetch(url, policy))
        .await
        .map_err(|_| refused(format!("no answer within {:?}", policy.timeout)))?
}

async fn fetch(url: &str, policy: &UrlPolicy) -> Result<Vec<u8>, KfpError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| refused(format!("{url:?} is not a URL: {e}")))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if policy.allow_http => false,
        Some("http") => return Err(refused("http URLs are not allowed; use https")),
        _ => return Err(refused("only http(s) URLs are supported")),
    };
    let host = uri
        .host()
        .ok_or_else(|| refused("the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if !domain_allowed(&host, &policy.allowed_domains) {
        return Err(refused(format!(
            "the host {host:?} is not in the allowed domains"
        )));
    }
    let default_port = if tls { 443 } else { 80 };
    let port = uri.port_u16().unwrap_or(default_port);
    if port != default_port && !policy.allow_any_port {
        return Err(refused(format!("port {port} is not allowed")));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| refused(format!("cannot resolve {host:?}: {e}")))?
        .take(16)
        .collect();
    if addrs.is_empty() {
        return Err(refused(format!("{host:?} has no address")));
    }
    if !policy.allow_private_addresses
        && let Some(a) = addrs.iter().find(|a| is_private(a.ip()))
    {
        return Err(refused(format!(
            "{host:?} resolves to a non-public address ({})",
            a.ip()
        )));
    }
    let tcp = tokio::net::TcpStream::connect(addrs[0])
        .await
        .map_err(|e| refused(format!("cannot connect to {host:?}: {e}")))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("kfp-apiserver/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(refused)?;
    if tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(refused)?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| refused(format!("TLS with {host:?} failed: {e}")))?;
        send(hyper_util::rt::TokioIo::new(stream), request).await
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await
    }
}

async fn send<T>(io: T, request: http::Request<Empty<Bytes>>) -> Result<Vec<u8>, KfpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| refused(format!("HTTP handshake failed: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| refused(format!("the request failed: {e}")))?;
        if resp.status() != http::StatusCode::OK {
            return Err(refused(format!("the server answered {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_FILE_BYTES)
            .collect()
            .await
            .map_err(|e| refused(format!("reading the file failed: {e}")))?;
        Ok(body.to_bytes().to_vec())
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_addresses() {
        let allowed: Vec<String> = vec!["github.com".into(), "*.example.com".into()];
        assert!(domain_allowed("GitHub.com", &allowed));
        assert!(domain_allowed("a.b.example.com", &allowed));
        assert!(!domain_allowed("example.com", &allowed));
        assert!(!domain_allowed("evilgithub.com", &allowed));
        assert!(domain_allowed("anything", &["*".into()]));
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "192.168.0.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn the_default_policy_refuses_before_connecting() {
        let p = UrlPolicy::default();
        for (url, want) in [
            ("http://github.com/x.yaml", "http URLs are not allowed"),
            ("ftp://github.com/x", "only http(s)"),
            ("https://evil.test/x.yaml", "not in the allowed domains"),
            ("https://github.com:8443/x.yaml", "port 8443"),
            ("not a url", "is not a URL"),
        ] {
            let e = download(url, &p).await.unwrap_err();
            assert!(e.user.contains(want), "{url}: {}", e.user);
        }
        let local = UrlPolicy {
            allowed_domains: vec!["localhost".into()],
            ..UrlPolicy::default()
        };
        let e = download("https://localhost/x.yaml", &local)
            .await
            .unwrap_err();
        assert!(e.user.contains("non-public address"), "{}", e.user);
    }

    #[tokio::test]
    async fn downloads_from_an_allowed_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "404 Not Found"] {
                let (mut s, _) = listener.accept().await.unwrap();
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
                );
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let p = UrlPolicy {
            allow_http: true,
            allowed_domains: vec!["127.0.0.1".into()],
            allow_private_addresses: true,
            allow_any_port: true,
            timeout: Duration::from_secs(10),
        };
        let url = format!("http://127.0.0.1:{port}/p.yaml");
        assert_eq!(download(&url, &p).await.unwrap(), b"hello");
        let e = download(&url, &p).await.unwrap_err();
        assert!(e.user.contains("404"), "{}", e.user);
    }
}
