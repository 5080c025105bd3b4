//! `kfp-conformance`: black-box test support. A [`DevServer`] is the real `kfp-apiserver` binary
//! started with `serve --dev` in a fresh data directory on a free loopback port; tests talk to
//! it only through real clients (kubectl, kube-rs). Nothing here links the server.
//!
//! The binary is `$KFP_APISERVER_BIN` or `target/debug/kfp-apiserver` (scripts/test builds it);
//! with `KFP_CONFORMANCE_STORE=kube` every [`DevServer`] keeps its objects in the `kube://` store
//! instead, on its own stand-in host cluster (the `kfp-test-host` binary of this package, in the
//! server's data directory), so the same suites run on the CRD backend.
//! kubectl is `$KUBECTL` or the one `../shared/tools/install-kubectl` installs. [`kfp_db`] makes
//! the KFP database the migration tests read.

pub mod aggregator;
pub mod kfp_db;
pub mod load;
pub mod pki;
pub mod sim;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The server binary under test.
pub fn server_binary() -> PathBuf {
    let p = std::env::var_os("KFP_APISERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/kfp-apiserver"));
    assert!(
        p.exists(),
        "{} does not exist: run `cargo build -p kfp-apiserver` (scripts/test does) or set KFP_APISERVER_BIN",
        p.display()
    );
    p
}

/// The kubectl under test.
pub fn kubectl_binary() -> PathBuf {
    let p = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/kfp-tools/bin/kubectl")
        });
    assert!(
        p.exists(),
        "{} does not exist: run ../shared/tools/install-kubectl (scripts/test does) or set KUBECTL",
        p.display()
    );
    p
}

/// The stand-in host cluster binary (`$KFP_TEST_HOST_BIN` or `target/debug/kfp-test-host`, which
/// `cargo test -p kfp-conformance` builds).
pub fn test_host_binary() -> PathBuf {
    let p = std::env::var_os("KFP_TEST_HOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/kfp-test-host"));
    assert!(
        p.exists(),
        "{} does not exist: run `cargo build -p kfp-conformance --bin kfp-test-host` or set KFP_TEST_HOST_BIN",
        p.display()
    );
    p
}

/// Whether [`DevServer`]s keep their objects in the `kube://` store on a stand-in host cluster
/// (`KFP_CONFORMANCE_STORE=kube`) rather than in their embedded SQLite database.
pub fn kube_store_mode() -> bool {
    std::env::var("KFP_CONFORMANCE_STORE").is_ok_and(|v| v == "kube")
}

/// `serve` flags that, in [`kube_store_mode`], belong to the host: its etcd compacts and its
/// watch cache serves resumes, not the server's (which has no history of its own there).
const HOST_FLAGS: [&str; 4] = [
    "--watch-ring-capacity",
    "--compaction-keep-revisions",
    "--compaction-keep-seconds",
    "--compaction-interval-seconds",
];

/// Splits `serve` flags into (the server's, the host's) for [`kube_store_mode`].
fn split_host_flags(flags: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut server, mut host) = (Vec::new(), Vec::new());
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        let name = f.split('=').next().unwrap_or(f);
        if HOST_FLAGS.contains(&name) {
            host.push((*f).to_owned());
            if !f.contains('=')
                && let Some(v) = it.next()
            {
                host.push((*v).to_owned());
            }
        } else {
            server.push((*f).to_owned());
        }
    }
    (server, host)
}

/// A running `kfp-test-host` for one server's data directory.
struct TestHost {
    child: Child,
}

impl TestHost {
    /// Starts the host on `DIR/host` and waits (at most 30 s) for its kubeconfig, which it
    /// returns.
    fn start(dir: &Path, flags: &[String]) -> (TestHost, PathBuf) {
        let data = dir.join("host");
        std::fs::create_dir_all(&data).expect("host dir");
        let kubeconfig = data.join("kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path_for(dir).with_extension("host.log"))
            .expect("host log file");
        let child = Command::new(test_host_binary())
            .arg("--data-dir")
            .arg(&data)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kfp-test-host");
        let mut host = TestHost { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !kubeconfig.exists() {
            if let Ok(Some(status)) = host.child.try_wait() {
                panic!("kfp-test-host exited ({status}); see its log beside the server's");
            }
            assert!(
                Instant::now() < deadline,
                "kfp-test-host did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (host, kubeconfig)
    }

    /// SIGTERM, then wait (at most 30 s, then SIGKILL).
    fn stop(mut self) {
        terminate(&mut self.child);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM and waits at most 30 s (then SIGKILL); the exit code, -1 when killed.
fn terminate(child: &mut Child) -> i32 {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A running `serve --dev`.
pub struct DevServer {
    child: Option<Child>,
    /// The stand-in host cluster, in [`kube_store_mode`].
    host: Option<TestHost>,
    /// The data directory.
    pub dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The kubeconfig the server wrote.
    pub kubeconfig: PathBuf,
    owned_dir: bool,
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl DevServer {
    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a server in a fresh directory and waits (at most 30 s) until `/readyz` answers.
    pub fn start(name: &str) -> DevServer {
        let dir =
            std::env::temp_dir().join(format!("kfp-conformance-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self::start_in(dir, true)
    }

    /// Starts a server on an existing data directory (restart tests).
    pub fn start_in(dir: PathBuf, owned_dir: bool) -> DevServer {
        Self::start_with(dir, owned_dir, &format!("127.0.0.1:{}", free_port()), &[])
    }

    /// Starts a server on `addr` with extra `serve` flags. In [`kube_store_mode`] (unless the
    /// flags name a `--store`) a host cluster starts first on `DIR/host` and the server keeps
    /// its objects there (`--store kube://... --install-crds`); history flags go to the host.
    pub fn start_with(dir: PathBuf, owned_dir: bool, addr: &str, flags: &[&str]) -> DevServer {
        let addr = addr.to_owned();
        let on_host = kube_store_mode() && !flags.iter().any(|f| f.starts_with("--store"));
        let (mut flags, host_flags) = if on_host {
            split_host_flags(flags)
        } else {
            (flags.iter().map(|f| (*f).to_owned()).collect(), Vec::new())
        };
        let host = on_host.then(|| {
            let (host, kubeconfig) = TestHost::start(&dir, &host_flags);
            flags.push(format!(
                "--store=kube://?kubeconfig={}",
                kubeconfig.display()
            ));
            flags.push("--install-crds".to_owned());
            host
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path_for(&dir))
            .expect("log file");
        let child = Command::new(server_binary())
            .args(["serve", "--dev", "--listen", &addr, "--data-dir"])
            .arg(&dir)
            .args(&flags)
            // Every request's line (debug since the server logs requests as kube-apiserver's
            // -v=3): tests read watch starts from it, and a failing test's log shows them all.
            .env("KFP_APISERVER_LOG", "info,kfp_apiserver::layers=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kfp-apiserver");
        let s = DevServer {
            child: Some(child),
            host,
            kubeconfig: dir.join("kubeconfig"),
            dir,
            addr,
            owned_dir,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.kubeconfig.exists() {
                let r = self.kubectl(&["get", "--raw", "/readyz"]);
                if r.code == 0 && r.stdout.trim() == "ok" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kfp-apiserver did not become ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `stdin` as standard input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(kubectl_binary());
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST");
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output").into()
    }

    /// Starts a long-running kubectl (e.g. `get -w`) with piped output.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Child {
        Command::new(kubectl_binary())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl")
    }

    /// Starts a long-running kubectl and delivers its output line by line (a thread reads it);
    /// the process ends when the returned child is killed.
    pub fn kubectl_lines(&self, args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
        use std::io::BufRead;
        let mut child = self.kubectl_spawn(args);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// Stops the server with SIGTERM and waits for it (graceful shutdown), keeping the data;
    /// then its host cluster, if it has one.
    pub fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return 0;
        };
        let code = terminate(&mut child);
        if let Some(h) = self.host.take() {
            h.stop();
        }
        code
    }

    /// The server's log file (stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        log_path_for(&self.dir)
    }

    /// The admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token"))
            .expect("token")
            .trim()
            .to_owned()
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.host = None;
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn log_path_for(dir: &Path) -> PathBuf {
    std::env::temp_dir().join(format!(
        "{}.log",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("kfp")
    ))
}

/// The shared corpus directory.
pub fn corpus() -> PathBuf {
    workspace().join("../shared/corpus")
}

/// YAML files of a corpus directory, sorted.
pub fn corpus_files(sub: &str) -> Vec<PathBuf> {
    let dir = corpus().join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// A running `kfp-apiserver serve` with any flags (aggregated mode: no `--dev`), logging to
/// `DIR/server.log`; ready once `/readyz` answers `ok` over TLS.
pub struct Served {
    child: Option<Child>,
    /// The data directory (owned: removed on drop).
    pub dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Served {
    /// Starts `serve --listen ADDR FLAGS...` and waits (at most 30 s) until `/readyz` answers
    /// over TLS with a certificate `serving_ca_pem` signed.
    pub fn start(dir: PathBuf, flags: &[String], serving_ca_pem: &str) -> Served {
        std::fs::create_dir_all(&dir).expect("dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("server.log")).expect("log file");
        let child = Command::new(server_binary())
            .args(["serve", "--listen", &addr])
            .args(flags)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kfp-apiserver");
        let mut s = Served {
            child: Some(child),
            dir,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, body)) = https_get(&s.addr, serving_ca_pem, "/readyz", &[])
                && body.trim() == "ok"
            {
                return s;
            }
            if let Some(Ok(Some(status))) = s.child.as_mut().map(Child::try_wait) {
                panic!("kfp-apiserver exited ({status}):\n{}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "kfp-apiserver did not become ready in 30 s:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One blocking HTTPS/1.1 GET to `addr` on a new connection, trusting `ca_pem`, with `headers`;
/// the status and body, or `None` when the connection, the handshake or the answer failed
/// (5 s limit each way).
pub fn https_get(
    addr: &str,
    ca_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let config = pki::client_config(ca_pem, None, &[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).ok()?;
    let tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    tcp.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    // A peer that closes without close_notify still delivered what it sent.
    let _ = tls.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Some((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The payload of a chunked body (what arrived of it).
fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let Some(n) = std::str::from_utf8(&s[..eol])
            .ok()
            .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
        else {
            break;
        };
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// What [`tls_get`] got: the status, the body, and the serving certificate (DER) of the
/// connection.
pub struct TlsAnswer {
    /// HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
    /// The server's leaf certificate.
    pub server_cert: Vec<u8>,
}

/// One HTTPS/1.1 GET on a new connection to `addr` (name `localhost`), trusting `ca_pem`, with
/// an optional client certificate (PEM chain, PEM key) and headers; `Err` when the connection,
/// the handshake or the request fails (10 s limit for the answer).
pub async fn tls_get(
    addr: &str,
    ca_pem: &str,
    cert: Option<&(String, String)>,
    headers: &[(&str, &str)],
    path: &str,
) -> Result<TlsAnswer, String> {
    use http_body_util::BodyExt;
    let config = pki::client_config(ca_pem, cert, &[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let server_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        send.send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request"),
        ),
    )
    .await
    .map_err(|_| "timeout".to_owned())?
    .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(TlsAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        server_cert,
    })
}
