//! The `kube-system/extension-apiserver-authentication` ConfigMap, where kube-apiserver publishes
//! for aggregated servers its client CA, the front-proxy (request-header) CA, the CNs the
//! front proxy may have and the names of its headers (kubernetes/apiserver
//! `options/authentication.go`, `lookupMissingConfigInCluster`; the dynamic request-header and
//! client-CA controllers).
//!
//! It owns reading that ConfigMap with `kube`, parsing it (list values are JSON arrays, as kube
//! writes them), the start-up lookup rules (not found: carry on without; forbidden or
//! unreachable: refuse to start unless told to tolerate it) and the refresh that applies a
//! changed ConfigMap to the live CA bundles and front-proxy settings without a restart. What a
//! flag gives (`--client-ca-file`, `--requestheader-client-ca-file` with its header flags) is never
//! taken from the ConfigMap. It does not authenticate anything itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kfp_certs::ClientCas;

use crate::front_proxy::{RequestHeaderAuthenticator, RequestHeaderConfig};

/// Where the ConfigMap lives.
pub const NAMESPACE: &str = "kube-system";
/// Its name.
pub const NAME: &str = "extension-apiserver-authentication";

/// What the ConfigMap says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtensionAuth {
    /// `client-ca-file`: PEM, possibly empty.
    pub client_ca: String,
    /// `requestheader-client-ca-file`: PEM, possibly empty.
    pub request_header_ca: String,
    /// The `requestheader-*` names.
    pub request_header: RequestHeaderConfig,
}

/// Parses the ConfigMap's data. A key that is absent is empty, as kube reads it; a list that
/// is not a JSON array of strings is an error naming the key.
pub fn parse(data: &BTreeMap<String, String>) -> Result<ExtensionAuth, String> {
    let list = |key: &str| -> Result<Vec<String>, String> {
        match data.get(key).map(|v| v.trim()) {
            None | Some("") => Ok(Vec::new()),
            Some(v) => serde_json::from_str::<Vec<String>>(v)
                .map_err(|e| format!("{NAMESPACE}/{NAME}: {key}: not a JSON list of strings: {e}")),
        }
    };
    let text = |key: &str| data.get(key).cloned().unwrap_or_default();
    Ok(ExtensionAuth {
        client_ca: text("client-ca-file"),
        request_header_ca: text("requestheader-client-ca-file"),
        request_header: RequestHeaderConfig {
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: list("requestheader-username-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_prefixes: list("requestheader-extra-headers-prefix")?,
            uid_headers: list("requestheader-uid-headers")?,
        },
    })
}

/// Reads and parses the ConfigMap: `Ok(None)` when it does not exist.
pub async fn fetch(client: &kube::Client) -> Result<Option<ExtensionAuth>, String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), NAMESPACE);
    let read = tokio::time::timeout(Duration::from_secs(10), api.get_opt(NAME))
        .await
        .map_err(|_| format!("reading {NAMESPACE}/{NAME} timed out"))?;
    match read {
        Ok(None) => Ok(None),
        Ok(Some(cm)) => parse(&cm.data.unwrap_or_default()).map(Some),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(format!(
            "reading {NAMESPACE}/{NAME} is forbidden; usually fixed by a RoleBinding in {NAMESPACE} to the Role extension-apiserver-authentication-reader for this server's ServiceAccount ({})",
            s.message
        )),
        Err(e) => Err(format!("reading {NAMESPACE}/{NAME}: {e}")),
    }
}

/// Which settings come from the ConfigMap (those no flag gave), and where they go.
#[derive(Clone)]
pub struct Targets {
    /// The live client-certificate trust (its text bundles are the ConfigMap's).
    pub cas: Arc<ClientCas>,
    /// `client-ca-file` fills `cas.client`.
    pub client_ca: bool,
    /// The front proxy, when its CA and names come from the ConfigMap.
    pub request_header: Option<Arc<RequestHeaderAuthenticator>>,
}

impl Targets {
    /// Applies what the ConfigMap says to the live settings; logs what changed. A CA text that
    /// cannot be loaded leaves the bundle as it was (and is logged).
    pub fn apply(&self, auth: &ExtensionAuth) {
        let set = |bundle: Option<&kfp_certs::ReloadingCaBundle>, pem: &str, what: &str| {
            let Some(bundle) = bundle else { return };
            match bundle.set_pem(pem) {
                Ok(true) => tracing::info!(configmap = NAME, "{what} updated"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(configmap = NAME, error = %e, "{what} not usable; keeping the previous one")
                }
            }
        };
        if self.client_ca {
            set(self.cas.client.as_ref(), &auth.client_ca, "client CA");
        }
        if let Some(front) = &self.request_header {
            set(
                self.cas.request_header.as_ref(),
                &auth.request_header_ca,
                "front-proxy CA",
            );
            if front.set_config(auth.request_header.clone()) {
                tracing::info!(configmap = NAME, "front-proxy names and headers updated");
            }
        }
    }
}

/// Re-reads the ConfigMap every `interval` and applies it; a failed read keeps what is in force
/// (and is logged), a deleted ConfigMap too (a transient delete must not drop the front proxy).
pub fn spawn_refresh(
    client: kube::Client,
    interval: Duration,
    targets: Targets,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match fetch(&client).await {
                Ok(Some(auth)) => targets.apply(&auth),
                Ok(None) => {
                    tracing::debug!(configmap = NAME, "not found; keeping the settings in force")
                }
                Err(e) => tracing::warn!(error = %e, "authentication ConfigMap refresh failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kube_apiserver_writes() {
        let data: BTreeMap<String, String> = [
            ("client-ca-file", "CLIENT PEM"),
            ("requestheader-client-ca-file", "FRONT PEM"),
            ("requestheader-allowed-names", "[\"front-proxy-client\"]"),
            ("requestheader-username-headers", "[\"X-Remote-User\"]"),
            ("requestheader-group-headers", "[\"X-Remote-Group\"]"),
            (
                "requestheader-extra-headers-prefix",
                "[\"X-Remote-Extra-\"]",
            ),
            ("requestheader-uid-headers", "[\"X-Remote-Uid\"]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let a = parse(&data).unwrap();
        assert_eq!(a.client_ca, "CLIENT PEM");
        assert_eq!(a.request_header_ca, "FRONT PEM");
        assert_eq!(
            a.request_header,
            RequestHeaderConfig {
                allowed_names: vec!["front-proxy-client".into()],
                username_headers: vec!["X-Remote-User".into()],
                group_headers: vec!["X-Remote-Group".into()],
                extra_prefixes: vec!["X-Remote-Extra-".into()],
                uid_headers: vec!["X-Remote-Uid".into()],
            }
        );
        let empty = parse(&BTreeMap::new()).unwrap();
        assert!(empty.client_ca.is_empty() && empty.request_header.username_headers.is_empty());
        let bad: BTreeMap<String, String> =
            [("requestheader-allowed-names".to_owned(), "front".to_owned())].into();
        assert!(
            parse(&bad)
                .unwrap_err()
                .contains("requestheader-allowed-names")
        );
    }
}
