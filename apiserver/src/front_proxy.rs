//! Client-certificate authentication, in kube-apiserver's order (`request/headerrequest`,
//! `request/x509`): first the front proxy — a certificate that chains to the request-header CA
//! and whose CN is an allowed name makes the `X-Remote-User` / `X-Remote-Group` (one header line
//! per group) / `X-Remote-Extra-*` / uid headers the user; then a certificate that chains to the
//! client CA is the user itself (CN = name, O = groups).
//!
//! The headers are read only on a front-proxy connection: on every other connection they are
//! ignored, never trusted. The same holds for KFP's multi-user header (`--kfp-user-header`,
//! [`KfpUserHeaderAuthenticator`]): it names the user of a KFP request only on a front-proxy
//! connection that sent no `X-Remote-User`, or on the plain-HTTP KFP listener, which is by
//! definition behind a trusted proxy. The connection's certificate is verified and classified once, at the
//! TLS handshake (`kfp_certs::ClientCas::classify`); this module reads the [`VerifiedClient`]
//! the server put into each request.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use http::{Extensions, HeaderMap};
use kfp_certs::{ClientCa, ClientIdentity};

use crate::auth::{AuthError, Authenticator, UserInfo};

/// The connection's verified client certificate, as classified at the handshake.
#[derive(Clone, Debug)]
pub struct VerifiedClient(pub Arc<ClientIdentity>);

/// The request-header settings (flags or the `extension-apiserver-authentication` ConfigMap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// CNs a front-proxy certificate may have (empty: any certificate of the CA).
    pub allowed_names: Vec<String>,
    /// Headers holding the user name, first present wins (`X-Remote-User`).
    pub username_headers: Vec<String>,
    /// Headers holding groups, every line of each (`X-Remote-Group`).
    pub group_headers: Vec<String>,
    /// Prefixes of extra headers (`X-Remote-Extra-`).
    pub extra_prefixes: Vec<String>,
    /// Headers holding the uid (none by default).
    pub uid_headers: Vec<String>,
}

impl Default for RequestHeaderConfig {
    fn default() -> Self {
        RequestHeaderConfig {
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_prefixes: vec!["X-Remote-Extra-".into()],
            uid_headers: Vec::new(),
        }
    }
}

fn with_authenticated(mut groups: Vec<String>) -> Vec<String> {
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    groups
}

/// An extra key as kube-apiserver's `unescapeExtraKey` reads it: `url.PathUnescape`, and the key
/// exactly as sent when it has a `%` without two hex digits after it (Go's unescape fails
/// then). Bytes that are not UTF-8 after decoding become U+FFFD (Go keeps them raw).
fn path_unescape(s: &str) -> String {
    let b = s.as_bytes();
    let well_formed = b.iter().enumerate().all(|(i, c)| {
        *c != b'%'
            || b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return s.to_owned();
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The front proxy: trusts the `X-Remote-*` headers only on a connection whose certificate
/// chains to the request-header CA with an allowed CN. Its settings can be replaced while it
/// serves (the ConfigMap refresh).
pub struct RequestHeaderAuthenticator {
    config: RwLock<Arc<RequestHeaderConfig>>,
}

impl RequestHeaderAuthenticator {
    /// With these settings.
    pub fn new(config: RequestHeaderConfig) -> Self {
        RequestHeaderAuthenticator {
            config: RwLock::new(Arc::new(config)),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<RequestHeaderConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the settings; returns whether they changed.
    pub fn set_config(&self, config: RequestHeaderConfig) -> bool {
        let mut slot = self.config.write().unwrap_or_else(|p| p.into_inner());
        if **slot == config {
            return false;
        }
        *slot = Arc::new(config);
        true
    }

    /// Whether this connection is the front proxy's: its certificate chains to the
    /// request-header CA and has an allowed CN.
    pub fn is_front_proxy(&self, extensions: &Extensions) -> bool {
        let Some(VerifiedClient(id)) = extensions.get::<VerifiedClient>() else {
            return false;
        };
        let config = self.config();
        id.cas.contains(&ClientCa::RequestHeader)
            && (config.allowed_names.is_empty() || config.allowed_names.contains(&id.common_name))
    }
}

#[async_trait::async_trait]
impl Authenticator for RequestHeaderAuthenticator {
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<UserInfo>, AuthError> {
        if !self.is_front_proxy(extensions) {
            return Ok(None);
        }
        let config = self.config();
        let first = |names: &[String]| {
            names.iter().find_map(|h| {
                headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            })
        };
        let Some(name) = first(&config.username_headers) else {
            // A front-proxy connection without a user: not authenticated by this one.
            return Ok(None);
        };
        let groups: Vec<String> = config
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers {
            let key = k.as_str();
            for prefix in &config.extra_prefixes {
                let p = prefix.to_ascii_lowercase();
                if let Some(rest) = key.strip_prefix(p.as_str())
                    && let Ok(v) = v.to_str()
                {
                    extra
                        // Header names arrive lower-cased; kube-apiserver lower-cases before
                        // it unescapes, so an escaped capital stays one.
                        .entry(path_unescape(rest))
                        .or_default()
                        .push(v.to_owned());
                }
            }
        }
        Ok(Some(UserInfo {
            name,
            uid: first(&config.uid_headers).unwrap_or_default(),
            groups: with_authenticated(groups),
            extra,
        }))
    }
}

/// KFP's multi-user header (`kubeflow-userid` in KFP's manifests; `--kfp-user-header`): on a KFP
/// request, the header's value (less `prefix`, KFP's `KUBEFLOW_USERID_PREFIX`) is the user, with
/// the group `system:authenticated` only. Trusted only where a proxy vouches for it: on a
/// front-proxy connection (when it sent no `X-Remote-User`, which wins) and on the plain-HTTP
/// KFP listener. Anywhere else the header is ignored.
pub struct KfpUserHeaderAuthenticator {
    /// The header.
    pub header: http::HeaderName,
    /// Stripped from the value when present.
    pub prefix: String,
    /// Tells front-proxy connections (none: only the plain listener trusts the header).
    pub front_proxy: Option<Arc<RequestHeaderAuthenticator>>,
}

#[async_trait::async_trait]
impl Authenticator for KfpUserHeaderAuthenticator {
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<UserInfo>, AuthError> {
        if !matches!(
            extensions.get::<crate::request_info::Target>(),
            Some(crate::request_info::Target::Kfp(_))
        ) {
            return Ok(None);
        }
        let vouched = extensions
            .get::<crate::server::PlainKfpListener>()
            .is_some()
            || self
                .front_proxy
                .as_ref()
                .is_some_and(|f| f.is_front_proxy(extensions));
        if !vouched {
            return Ok(None);
        }
        let Some(value) = headers.get(&self.header).and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let name = value
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(value)
            .trim();
        if name.is_empty() {
            return Ok(None);
        }
        Ok(Some(UserInfo {
            name: name.to_owned(),
            uid: String::new(),
            groups: with_authenticated(Vec::new()),
            extra: BTreeMap::new(),
        }))
    }
}

/// x509 client certificates of the client CA: CN = user, O = groups.
pub struct X509Authenticator;

#[async_trait::async_trait]
impl Authenticator for X509Authenticator {
    async fn authenticate(
        &self,
        _: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<UserInfo>, AuthError> {
        let Some(VerifiedClient(id)) = extensions.get::<VerifiedClient>() else {
            return Ok(None);
        };
        if !id.cas.contains(&ClientCa::Client) || id.common_name.is_empty() {
            return Ok(None);
        }
        Ok(Some(UserInfo {
            name: id.common_name.clone(),
            uid: String::new(),
            groups: with_authenticated(id.organizations.clone()),
            extra: BTreeMap::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn ext(cas: &[ClientCa], cn: &str, orgs: &[&str]) -> Extensions {
        let mut e = Extensions::new();
        e.insert(VerifiedClient(Arc::new(ClientIdentity {
            cas: cas.to_vec(),
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| (*o).to_owned()).collect(),
            not_after: SystemTime::now(),
            generation: 0,
        })));
        e
    }

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-remote-user", "alice".parse().unwrap());
        h.append("x-remote-group", "devs".parse().unwrap());
        h.append("x-remote-group", "ops".parse().unwrap());
        h.insert(
            "x-remote-extra-authentication.kubernetes.io%2fcredential-id",
            "X509SHA256=ab".parse().unwrap(),
        );
        h.insert("x-remote-extra-scope%41", "s".parse().unwrap());
        h
    }

    #[tokio::test]
    async fn the_front_proxy_and_only_it_is_trusted_with_the_headers() {
        let a = RequestHeaderAuthenticator::new(RequestHeaderConfig {
            allowed_names: vec!["front-proxy-client".into()],
            ..Default::default()
        });
        let u = a
            .authenticate(
                &headers(),
                &ext(&[ClientCa::RequestHeader], "front-proxy-client", &[]),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, ["devs", "ops", "system:authenticated"]);
        assert_eq!(
            u.extra["authentication.kubernetes.io/credential-id"],
            ["X509SHA256=ab"]
        );
        assert_eq!(u.extra["scopeA"], ["s"], "unescaped after lower-casing");
        for (cas, cn) in [
            (vec![ClientCa::RequestHeader], "someone-else"),
            (vec![ClientCa::Client], "front-proxy-client"),
        ] {
            assert_eq!(
                a.authenticate(&headers(), &ext(&cas, cn, &[]))
                    .await
                    .unwrap(),
                None,
                "{cas:?} {cn}: headers ignored"
            );
        }
        assert_eq!(
            a.authenticate(&headers(), &Extensions::new())
                .await
                .unwrap(),
            None,
            "no certificate: headers ignored"
        );
    }

    #[test]
    fn extra_keys_unescape_as_go_path_unescape() {
        assert_eq!(path_unescape("a%2Fb%2fc"), "a/b/c");
        assert_eq!(path_unescape("%E2%9C%93"), "\u{2713}");
        assert_eq!(path_unescape("100%"), "100%", "a lone % stays");
        assert_eq!(path_unescape("%zz%4"), "%zz%4");
        assert_eq!(
            path_unescape("a%2Fb%zz"),
            "a%2Fb%zz",
            "one bad escape keeps the whole key as sent"
        );
        assert_eq!(path_unescape("%%41"), "%%41");
        assert_eq!(path_unescape("%ff"), "\u{fffd}", "not UTF-8: replaced");
    }

    #[tokio::test]
    async fn new_settings_apply_to_the_next_request() {
        let a = RequestHeaderAuthenticator::new(RequestHeaderConfig {
            allowed_names: vec!["front-proxy-client".into()],
            ..Default::default()
        });
        let proxy = ext(&[ClientCa::RequestHeader], "front-proxy-client", &[]);
        assert!(a.is_front_proxy(&proxy));
        assert!(a.set_config(RequestHeaderConfig {
            allowed_names: vec!["aggregator".into()],
            username_headers: vec!["X-User".into()],
            ..Default::default()
        }));
        assert!(!a.set_config((*a.config()).clone()), "unchanged");
        assert!(!a.is_front_proxy(&proxy), "that CN is no longer allowed");
        let mut h = HeaderMap::new();
        h.insert("x-user", "carol".parse().unwrap());
        let u = a
            .authenticate(&h, &ext(&[ClientCa::RequestHeader], "aggregator", &[]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.name, "carol", "the new user header");
    }

    #[tokio::test]
    async fn the_kfp_user_header_counts_only_where_a_proxy_vouches_for_it() {
        use crate::request_info::{KfpOp, Target};
        let front = Arc::new(RequestHeaderAuthenticator::new(RequestHeaderConfig {
            allowed_names: vec!["front-proxy-client".into()],
            ..Default::default()
        }));
        let a = KfpUserHeaderAuthenticator {
            header: http::HeaderName::from_static("kubeflow-userid"),
            prefix: "accounts.google.com:".into(),
            front_proxy: Some(front),
        };
        let mut h = HeaderMap::new();
        h.insert(
            "kubeflow-userid",
            "accounts.google.com:alice@example.com".parse().unwrap(),
        );
        let kfp = |mut e: Extensions| {
            e.insert(Target::Kfp(KfpOp::ListPipelines));
            e
        };
        let proxy = ext(&[ClientCa::RequestHeader], "front-proxy-client", &[]);
        let u = a
            .authenticate(&h, &kfp(proxy.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.name, "alice@example.com", "prefix stripped");
        assert_eq!(u.groups, ["system:authenticated"]);
        let mut plain = Extensions::new();
        plain.insert(crate::server::PlainKfpListener);
        assert!(a.authenticate(&h, &kfp(plain)).await.unwrap().is_some());
        for (what, e) in [
            ("no certificate", kfp(Extensions::new())),
            (
                "a client-CA certificate",
                kfp(ext(&[ClientCa::Client], "front-proxy-client", &[])),
            ),
            (
                "a CN not allowed",
                kfp(ext(&[ClientCa::RequestHeader], "mallory", &[])),
            ),
            ("not a KFP request", proxy),
        ] {
            assert_eq!(a.authenticate(&h, &e).await.unwrap(), None, "{what}");
        }
    }

    #[tokio::test]
    async fn client_ca_certificates_name_the_user() {
        let u = X509Authenticator
            .authenticate(&headers(), &ext(&[ClientCa::Client], "carol", &["team-a"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.name.as_str(), u.groups.as_slice()),
            (
                "carol",
                &["team-a".to_owned(), "system:authenticated".to_owned()][..]
            )
        );
        assert_eq!(
            X509Authenticator
                .authenticate(&headers(), &ext(&[ClientCa::RequestHeader], "x", &[]))
                .await
                .unwrap(),
            None
        );
    }
}
