//! `serve --dev`: everything a developer needs without a cluster, in one data directory: the
//! SQLite store, a self-signed CA and serving certificate, an admin token and a kubeconfig that
//! uses them. Files are created once and reused, so restarts keep data and credentials.

use std::path::{Path, PathBuf};

/// What `--dev` prepared.
#[derive(Clone, Debug)]
pub struct DevSetup {
    /// `sqlite://DIR/store.db`.
    pub store_url: String,
    /// Serving certificate.
    pub cert: PathBuf,
    /// Serving key.
    pub key: PathBuf,
    /// The admin bearer token.
    pub token: String,
    /// The kubeconfig written for the admin.
    pub kubeconfig: PathBuf,
}

/// Creates (or reuses) the development data directory.
pub fn prepare(dir: &Path, listen: &str) -> anyhow::Result<DevSetup> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let certs = kfp_certs::ensure_dev_certs(&dir.join("pki"))?;
    let token_path = dir.join("admin.token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            let t = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            kfp_certs::write_private(&token_path, t.as_bytes())?;
            t
        }
    };
    let ca = std::fs::read(&certs.ca_cert)?;
    let server = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("https://127.0.0.1:{}", a.port()),
        Ok(a) if a.is_ipv6() => format!("https://[{}]:{}", a.ip(), a.port()),
        Ok(a) => format!("https://{a}"),
        Err(_) => format!("https://{listen}"),
    };
    let kubeconfig = kubeconfig(&server, &ca, &token);
    let path = dir.join("kubeconfig");
    kfp_certs::write_private(&path, kubeconfig.as_bytes())?;
    Ok(DevSetup {
        store_url: format!("sqlite://{}", dir.join("store.db").display()),
        cert: certs.cert,
        key: certs.key,
        token,
        kubeconfig: path,
    })
}

fn kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kfp-apiserver-dev
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: kfp-admin
  user:
    token: {token}
contexts:
- name: kfp-apiserver-dev
  context:
    cluster: kfp-apiserver-dev
    user: kfp-admin
    namespace: default
current-context: kfp-apiserver-dev
"
    )
}
