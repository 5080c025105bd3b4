//! Connections are bounded in time, against the real binary over TLS: a client that completes
//! the handshake and sends nothing, one that trickles its headers, one idle between requests,
//! and many idle TLS connections at once are all closed by the server (header-read and idle
//! timeouts set short here); a normal request on a fresh connection is still served. And 200
//! unauthenticated clients each sending a 3 MiB body are answered 401 without the server
//! buffering their bodies.

use std::sync::Arc;
use std::time::Duration;

use kfp_conformance::DevServer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Longest a test waits for the server to close a connection (the timeouts are 1-2 s).
const BOUND: Duration = Duration::from_secs(15);

fn connector(server: &DevServer) -> TlsConnector {
    connector_alpn(server, &[])
}

fn connector_alpn(server: &DevServer, alpn: &[&[u8]]) -> TlsConnector {
    let ca = CertificateDer::from_pem_file(server.dir.join("pki").join("ca.crt")).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn connect(server: &DevServer, tls: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(&server.addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name").to_owned();
    tls.connect(name, tcp).await.expect("handshake")
}

/// Reads until the server closes the connection; returns what it sent. Fails the test if the
/// connection is still open after [`BOUND`].
async fn until_closed(stream: &mut TlsStream<TcpStream>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    out
}

fn start(tag: &str) -> DevServer {
    let dir = std::env::temp_dir().join(format!("kfp-conn-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = format!("127.0.0.1:{}", kfp_conformance::free_port());
    DevServer::start_with(
        dir,
        true,
        &addr,
        &[
            "--header-read-timeout-seconds",
            "1",
            "--idle-timeout-seconds",
            "2",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_trickling_and_idle_connections_are_closed() {
    let server = start("one");
    let tls = connector(&server);

    // Handshake, then nothing.
    let mut silent = connect(&server, &tls).await;
    until_closed(&mut silent).await;

    // Headers one byte at a time, slower than the header-read timeout allows.
    let mut trickle = connect(&server, &tls).await;
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let (mut rd, mut wr) = tokio::io::split(trickle);
    let writer = tokio::spawn(async move {
        for b in b"Host: 127.0.0.1\r\nX-Slow: yes\r\n".iter() {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let got = tokio::time::timeout(BOUND, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(got.is_ok(), "a trickled request was kept open");
    writer.abort();

    // A served request, then idle keep-alive: closed after the idle timeout.
    let mut idle = connect(&server, &tls).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut idle).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// HTTP/2 too: a connection that negotiated h2, sent its preface and settings and then no
/// request is closed after the idle timeout (with a GOAWAY or a plain close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed() {
    let server = start("h2");
    let tls = connector_alpn(&server, &[b"h2"]);
    let mut conn = connect(&server, &tls).await;
    assert_eq!(
        conn.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server speaks HTTP/2"
    );
    // The client connection preface, then an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("settings");
    let sent = until_closed(&mut conn).await;
    // The server's own SETTINGS frame came first: it was an HTTP/2 connection, idle.
    assert!(sent.len() >= 9 && sent[3] == 4, "server frames: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_tls_connections_do_not_stay_open() {
    let server = start("many");
    let tls = connector(&server);
    let mut conns = Vec::new();
    for _ in 0..200 {
        conns.push(connect(&server, &tls).await);
    }
    let mut tasks = Vec::new();
    for mut c in conns {
        tasks.push(tokio::spawn(
            async move { until_closed(&mut c).await.len() },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 0, "closed without an answer");
    }
    // The server still serves new connections.
    let mut fresh = connect(&server, &tls).await;
    fresh
        .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let text = String::from_utf8_lossy(&until_closed(&mut fresh).await).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Before the layered stack, 200 such clients grew the server from 75 to 652 MiB: every body
/// was read before authentication. Now the 401 comes first and no body is buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_large_bodies_are_refused_without_being_buffered() {
    let server = start("bodies");
    let tls = connector(&server);
    let pid = server.pid().expect("running");
    let before = peak_rss_kib(pid);
    const BODY: usize = 3 << 20;
    let mut clients = Vec::new();
    for _ in 0..200 {
        let stream = connect(&server, &tls).await;
        clients.push(tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let head = format!(
                "POST /apis/pipelines.kubeflow.org/v2beta1/namespaces/a/pipelines HTTP/1.1\r\n\
                 Host: x\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
            );
            let writer = tokio::spawn(async move {
                let chunk = vec![b'x'; 64 << 10];
                if wr.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..BODY / chunk.len() {
                    if wr.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(BOUND, async {
                while !got.windows(3).any(|w| w == b"401") {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            writer.abort();
            assert!(read.is_ok(), "no answer within {BOUND:?}");
            String::from_utf8_lossy(&got).into_owned()
        }));
    }
    for c in clients {
        let answer = c.await.expect("client");
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "every client is refused: {answer:?}"
        );
    }
    let grew_mib = peak_rss_kib(pid).saturating_sub(before) / 1024;
    eprintln!("peak RSS grew by {grew_mib} MiB for 200 x 3 MiB unauthenticated bodies");
    assert!(
        grew_mib < 64,
        "the server buffered bodies it had refused: peak RSS grew by {grew_mib} MiB"
    );
}

/// `--token-auth-file` is honoured beside `--dev`'s generated admin token, not ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_counts_in_dev_mode_too() {
    let file = std::env::temp_dir().join(format!("kfp-conn-tokens-{}.csv", std::process::id()));
    std::fs::write(&file, "file-token-123,alice,u-1,\"team-a\"\n").expect("token file");
    let dir = std::env::temp_dir().join(format!("kfp-conn-tokens-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = format!("127.0.0.1:{}", kfp_conformance::free_port());
    let server = DevServer::start_with(
        dir,
        true,
        &addr,
        &["--token-auth-file", file.to_str().expect("utf-8")],
    );
    let tls = connector(&server);
    for (token, want) in [
        ("file-token-123", "HTTP/1.1 200"),
        ("wrong", "HTTP/1.1 401"),
    ] {
        let mut conn = connect(&server, &tls).await;
        conn.write_all(
            format!(
                "GET /apis/pipelines.kubeflow.org/v2beta1/namespaces/a/pipelines HTTP/1.1\r\n\
                 Host: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let answer = String::from_utf8_lossy(&until_closed(&mut conn).await).into_owned();
        assert!(answer.starts_with(want), "{token}: {answer}");
    }
    let _ = std::fs::remove_file(&file);
}
