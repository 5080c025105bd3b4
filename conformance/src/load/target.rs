//! A server under load, as a kubeconfig describes it: address, TLS trust, credentials (bearer
//! token, token file or client certificate), and connections to it over HTTP/1.1 or HTTP/2.
//!
//! Only what `kubectl` itself would send: no private API, no shortcut past the server's stack.
//! Exec and auth-provider plugins are not run (a load tool should not spawn a process per run);
//! mint a token first and put it in the kubeconfig.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::config::{Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use secrecy::ExposeSecret;

/// The wire protocol of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Proto {
    /// HTTP/1.1: one request at a time per connection (what wrk and most informers use).
    Http1,
    /// HTTP/2: many streams per connection (client-go's default over TLS).
    Http2,
}

/// One server: where it is and how to authenticate to it.
#[derive(Clone)]
pub struct Target {
    /// A short name for reports (the kubeconfig's server URL).
    pub label: String,
    /// `host:port` to connect to.
    pub addr: String,
    /// The name the serving certificate must carry, and the `Host` header.
    pub host: String,
    /// A path prefix from the server URL (`https://h/prefix`), usually empty.
    pub prefix: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    tls_h2: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<ServerName<'static>>,
    /// `Bearer …`, when the kubeconfig has a token.
    pub authorization: Option<http::HeaderValue>,
    /// The server's process ids on this machine (summed), for CPU and memory figures.
    pub pids: Vec<u32>,
}

fn pick<'a, T>(
    items: &'a [T],
    name: &str,
    what: &str,
    key: impl Fn(&T) -> &str,
) -> Result<&'a T, String> {
    items
        .iter()
        .find(|i| key(i) == name)
        .ok_or_else(|| format!("kubeconfig: no {what} named {name:?}"))
}

fn read_pem(data: Option<&str>, file: Option<&str>, what: &str) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine;
    if let Some(d) = data {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map(Some)
            .map_err(|e| format!("kubeconfig: {what} data is not base64: {e}"));
    }
    match file {
        Some(f) => std::fs::read(f)
            .map(Some)
            .map_err(|e| format!("kubeconfig: reading {what} {f}: {e}")),
        None => Ok(None),
    }
}

impl Target {
    /// Reads `path` (its current context, or `context`) into a target.
    pub fn from_kubeconfig(
        path: &std::path::Path,
        context: Option<&str>,
    ) -> Result<Target, String> {
        let kc = Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ctx_name = context
            .map(str::to_owned)
            .or(kc.current_context.clone())
            .ok_or("kubeconfig: no current-context and no --context")?;
        let ctx = pick(&kc.contexts, &ctx_name, "context", |c: &NamedContext| {
            &c.name
        })?
        .context
        .clone()
        .ok_or("kubeconfig: empty context")?;
        let cluster = pick(&kc.clusters, &ctx.cluster, "cluster", |c: &NamedCluster| {
            &c.name
        })?
        .cluster
        .clone()
        .ok_or("kubeconfig: empty cluster")?;
        let user = match &ctx.user {
            Some(u) => pick(&kc.auth_infos, u, "user", |a: &NamedAuthInfo| &a.name)?
                .auth_info
                .clone()
                .unwrap_or_default(),
            None => Default::default(),
        };
        if user.exec.is_some() || user.auth_provider.is_some() {
            return Err(
                "kubeconfig: exec and auth-provider users are not supported; put a token in it"
                    .into(),
            );
        }
        let server = cluster
            .server
            .clone()
            .ok_or("kubeconfig: cluster has no server")?;
        let uri: http::Uri = server
            .parse()
            .map_err(|e| format!("server {server:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("server {server:?}: not http(s)")),
        };
        let host = uri
            .host()
            .ok_or("server URL has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let prefix = uri.path().trim_end_matches('/').to_owned();

        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.expose_secret().trim().to_owned()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("kubeconfig: token file {f}: {e}"))?
                    .trim()
                    .to_owned(),
            ),
            _ => None,
        };
        let authorization = token
            .map(|t| http::HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| "kubeconfig: token is not a valid header value")?;

        let (tls, tls_h2, server_name) = if https {
            if cluster.insecure_skip_tls_verify == Some(true) {
                return Err(
                    "kubeconfig: insecure-skip-tls-verify is not supported; give the CA".into(),
                );
            }
            let ca = read_pem(
                cluster.certificate_authority_data.as_deref(),
                cluster.certificate_authority.as_deref(),
                "certificate-authority",
            )?
            .ok_or("kubeconfig: the cluster has no certificate-authority(-data)")?;
            let cert = read_pem(
                user.client_certificate_data.as_deref(),
                user.client_certificate.as_deref(),
                "client-certificate",
            )?;
            let key_data = user
                .client_key_data
                .as_ref()
                .map(|k| k.expose_secret().to_owned());
            let key = read_pem(
                key_data.as_deref(),
                user.client_key.as_deref(),
                "client-key",
            )?;
            let base = client_config(&ca, cert.zip(key))?;
            let mut h1 = base.clone();
            h1.alpn_protocols = vec![b"http/1.1".to_vec()];
            let mut h2 = base;
            h2.alpn_protocols = vec![b"h2".to_vec()];
            let name = cluster
                .tls_server_name
                .clone()
                .unwrap_or_else(|| host.clone());
            let sn = ServerName::try_from(name).map_err(|e| format!("server name: {e}"))?;
            (Some(Arc::new(h1)), Some(Arc::new(h2)), Some(sn))
        } else {
            (None, None, None)
        };
        Ok(Target {
            label: server,
            addr,
            host,
            prefix,
            tls,
            tls_h2,
            server_name,
            authorization,
            pids: Vec::new(),
        })
    }

    /// Opens one connection (10 s limit for TCP, TLS and the HTTP handshake).
    pub async fn connect(&self, proto: Proto) -> Result<Conn, String> {
        tokio::time::timeout(Duration::from_secs(10), self.connect_inner(proto))
            .await
            .map_err(|_| format!("connect {}: timed out", self.addr))?
    }

    async fn connect_inner(&self, proto: Proto) -> Result<Conn, String> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let cfg = match proto {
            Proto::Http1 => &self.tls,
            Proto::Http2 => &self.tls_h2,
        };
        match (cfg, &self.server_name) {
            (Some(cfg), Some(sn)) => {
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(sn.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", self.addr))?;
                handshake(proto, TokioIo::new(tls)).await
            }
            _ => handshake(proto, TokioIo::new(tcp)).await,
        }
    }

    /// A request to `path` (below the server URL's prefix) with this target's credentials.
    pub fn request(
        &self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> http::Request<Full<Bytes>> {
        let uri = format!("{}{path}", self.prefix);
        let mut b = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, &self.host)
            .header(http::header::ACCEPT, "application/json");
        if let Some(a) = &self.authorization {
            b = b.header(http::header::AUTHORIZATION, a.clone());
        }
        if let Some(ct) = content_type {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        b.body(Full::new(body))
            .expect("a request built from checked parts")
    }
}

fn client_config(
    ca_pem: &[u8],
    cert: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(c.map_err(|e| format!("CA: {e}"))?)
            .map_err(|e| format!("CA: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    Ok(match cert {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(&chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key =
                PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    })
}

async fn handshake<T>(proto: Proto, io: TokioIo<T>) -> Result<Conn, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match proto {
        Proto::Http1 => {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::H1(send))
        }
        Proto::Http2 => {
            let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(8 << 20)
                .handshake(io)
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::H2(send))
        }
    }
}

/// An open connection.
pub enum Conn {
    /// HTTP/1.1.
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    /// HTTP/2.
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// Sends one request and returns the response head with its streaming body.
    pub async fn send(
        &mut self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, String> {
        match self {
            Conn::H1(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await.map_err(|e| e.to_string())
            }
            Conn::H2(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Another handle on the same connection, for HTTP/2 (its streams are independent); `None`
    /// for HTTP/1.1, which carries one request at a time.
    pub fn share(&self) -> Option<Conn> {
        match self {
            Conn::H1(_) => None,
            Conn::H2(s) => Some(Conn::H2(s.clone())),
        }
    }

    /// Whether the connection can take another request.
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }
}
