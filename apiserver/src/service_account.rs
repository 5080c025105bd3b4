//! Local verification of projected ServiceAccount tokens (`--service-account-issuer-discovery`),
//! so the hot path of in-cluster clients (kfp.Client in a pod, controllers) needs no
//! TokenReview: the host cluster's issuer and signing keys are read once from its OIDC discovery
//! documents (`/.well-known/openid-configuration`, `/openid/v1/jwks`) through `kube`, and a
//! token is checked with `jsonwebtoken` for signature, issuer, audience, expiry and not-before,
//! then mapped to the user kube-apiserver would make of it (`system:serviceaccount:NS:NAME`,
//! the `system:serviceaccounts` groups, pod and credential extras).
//!
//! A token of another issuer, or not a JWT at all, is not this authenticator's: the next one
//! (TokenReview) is asked. A token of this issuer that fails a check is refused (401). A key id
//! the cached key set does not have makes one refresh of the set (at most one every 10 s, so
//! made-up key ids cannot turn requests into fetches). What it cannot see, unlike
//! kube-apiserver: whether the pod or secret a token is bound to still exists — a bound token
//! stays valid here until it expires (projected tokens live an hour by default).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use http::{Extensions, HeaderMap};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::auth::{AuthError, Authenticator, UserInfo};

/// The least time between two key-set fetches caused by unknown key ids.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// Clock skew allowed on `exp` and `nbf` (go-jose's default leeway, which kube uses).
pub const LEEWAY_SECONDS: u64 = 60;

/// The parts of the OIDC discovery document used here.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
}

/// The claims a projected ServiceAccount token carries.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    jti: Option<String>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: Ref,
    #[serde(default)]
    pod: Option<Ref>,
    #[serde(default)]
    node: Option<Ref>,
}

#[derive(Deserialize)]
struct Ref {
    name: String,
    #[serde(default)]
    uid: String,
}

/// Only the issuer, read before the signature is checked to choose the authenticator.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    iss: Option<String>,
}

/// Verifies the host cluster's ServiceAccount tokens with its published keys.
pub struct ServiceAccountTokenAuthenticator {
    client: kube::Client,
    issuer: String,
    audiences: Vec<String>,
    keys: RwLock<Arc<JwkSet>>,
    /// The last fetch caused by an unknown key id.
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &kube::Client,
    path: &str,
) -> Result<T, String> {
    let req = http::Request::get(path)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), client.request::<T>(req))
        .await
        .map_err(|_| format!("GET {path} timed out"))?
        .map_err(|e| format!("GET {path}: {e}"))
}

impl ServiceAccountTokenAuthenticator {
    /// Reads the issuer and its keys through `client`; `audiences` empty means the issuer
    /// itself (kube-apiserver's default `--api-audiences`).
    pub async fn discover(client: kube::Client, audiences: Vec<String>) -> Result<Self, String> {
        let d: Discovery = get_json(&client, "/.well-known/openid-configuration").await?;
        let keys: JwkSet = get_json(&client, "/openid/v1/jwks").await?;
        let audiences = if audiences.is_empty() {
            vec![d.issuer.clone()]
        } else {
            audiences
        };
        tracing::info!(issuer = %d.issuer, keys = keys.keys.len(), "verifying ServiceAccount tokens locally");
        Ok(ServiceAccountTokenAuthenticator {
            client,
            issuer: d.issuer,
            audiences,
            keys: RwLock::new(Arc::new(keys)),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn key(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let jwk = match kid {
            Some(kid) => keys.find(kid)?,
            // A token without a key id: only unambiguous with a single key.
            None if keys.keys.len() == 1 => keys.keys.first()?,
            None => return None,
        };
        DecodingKey::from_jwk(jwk).ok()
    }

    /// Fetches the key set again, unless that happened less than [`REFRESH_EVERY`] ago.
    async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match get_json::<JwkSet>(&self.client, "/openid/v1/jwks").await {
            Ok(keys) => {
                tracing::info!(
                    keys = keys.keys.len(),
                    "ServiceAccount signing keys refreshed"
                );
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            }
            Err(e) => {
                tracing::warn!(error = %e, "refreshing the ServiceAccount signing keys failed")
            }
        }
    }

    fn verify(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<UserInfo, String> {
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = LEEWAY_SECONDS;
        v.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &v)
            .map_err(|e| e.to_string())?
            .claims;
        let k = claims
            .kubernetes
            .ok_or("not a ServiceAccount token (no kubernetes.io claim)")?;
        let expected = format!(
            "system:serviceaccount:{}:{}",
            k.namespace, k.serviceaccount.name
        );
        if claims.sub != expected {
            return Err(format!(
                "the subject {:?} does not match the ServiceAccount {expected:?}",
                claims.sub
            ));
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(pod) = k.pod {
            extra.insert(
                "authentication.kubernetes.io/pod-name".into(),
                vec![pod.name],
            );
            extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![pod.uid]);
        }
        if let Some(node) = k.node {
            extra.insert(
                "authentication.kubernetes.io/node-name".into(),
                vec![node.name],
            );
            extra.insert(
                "authentication.kubernetes.io/node-uid".into(),
                vec![node.uid],
            );
        }
        if let Some(jti) = claims.jti {
            extra.insert(
                "authentication.kubernetes.io/credential-id".into(),
                vec![format!("JTI={jti}")],
            );
        }
        Ok(UserInfo {
            name: claims.sub,
            uid: k.serviceaccount.uid,
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", k.namespace),
                "system:authenticated".into(),
            ],
            extra,
        })
    }
}

/// The unverified issuer of a JWT, or `None` when `token` is not one.
fn issuer_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Peek>(&bytes).ok()?.iss
}

/// Signature algorithms a published key may be used with (never HMAC or `none`).
fn asymmetric(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    )
}

#[async_trait::async_trait]
impl Authenticator for ServiceAccountTokenAuthenticator {
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        _: &Extensions,
    ) -> Result<Option<UserInfo>, AuthError> {
        let Some(token) = crate::delegated::bearer(headers) else {
            return Ok(None);
        };
        // Not a JWT, or another issuer's: TokenReview decides.
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        if issuer_of(token).as_deref() != Some(self.issuer.as_str()) {
            return Ok(None);
        }
        if !asymmetric(header.alg) {
            return Err(AuthError(format!(
                "ServiceAccount token signed with {:?}",
                header.alg
            )));
        }
        let kid = header.kid.as_deref();
        let key = match self.key(kid) {
            Some(k) => k,
            None => {
                self.refresh().await;
                self.key(kid).ok_or_else(|| {
                    AuthError("ServiceAccount token signed by an unknown key".into())
                })?
            }
        };
        self.verify(token, &key, header.alg)
            .map(Some)
            .map_err(|e| AuthError(format!("ServiceAccount token refused: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_is_read_without_trusting_the_token() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"iss":"https://kubernetes.default.svc"}"#)
        );
        assert_eq!(
            issuer_of(&t).as_deref(),
            Some("https://kubernetes.default.svc")
        );
        assert_eq!(issuer_of("opaque-token"), None);
        assert_eq!(issuer_of("a.!!!.c"), None);
        assert!(!asymmetric(Algorithm::HS256));
        assert!(asymmetric(Algorithm::ES256));
    }
}
