//! Delegated authentication and authorization, as an aggregated API server does them
//! (kubernetes/apiserver `authenticatorfactory/delegating.go`, `authorizerfactory/delegating.go`):
//! bearer tokens are checked with a `TokenReview`, requests with a `SubjectAccessReview`, both
//! sent to the host cluster's kube-apiserver through `kube`, both answers cached for a TTL
//! (10 s for allowed and denied alike by default) in bounded caches so a burst of identical
//! requests costs one review.
//!
//! [`DelegatingAuthorizer`] answers without a review what kube-apiserver's default RBAC always
//! allows: `system:masters`, and `get` of discovery, OpenAPI and `/version` for any authenticated
//! user (`system:discovery`, `system:public-info-viewer`). Health probes never reach an
//! authorizer (the stack lets them through).
//!
//! Tokens are kept only as SHA-256 digests in the cache. Nothing here knows HTTP routes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Extensions, HeaderMap};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::auth::{Attributes, AuthError, Authenticator, Authorizer, Decision, UserInfo};

/// kube-apiserver's default TTLs and review timeout.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// How long one review may take.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries a cache holds before it forgets the oldest.
pub const CACHE_CAPACITY: usize = 10_000;

/// A bounded cache whose entries expire: inserting over capacity evicts the oldest entry.
pub struct TtlCache<K, V> {
    inner: Mutex<CacheInner<K, V>>,
    capacity: usize,
}

struct CacheInner<K, V> {
    map: HashMap<K, (Instant, V)>,
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            inner: Mutex::new(CacheInner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity: capacity.max(1),
        }
    }

    /// The value, if present and not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.map.get(key) {
            Some((until, v)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                inner.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `ttl` (a zero TTL stores nothing).
    pub fn put(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + ttl;
        if inner.map.insert(key.clone(), (until, value)).is_none() {
            inner.order.push_back(key);
        }
        while inner.map.len() > self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
        // Keys removed by expiry stay in `order` until popped; keep it bounded too.
        if inner.order.len() > self.capacity * 2 {
            let CacheInner { map, order } = &mut *inner;
            order.retain(|k| map.contains_key(k));
        }
    }

    /// Entries held (tests, metrics).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Bearer tokens checked by the host cluster's `TokenReview`, cached by the token's digest
/// (authenticated and rejected answers alike).
pub struct TokenReviewAuthenticator {
    client: kube::Client,
    audiences: Vec<String>,
    success_ttl: Duration,
    failure_ttl: Duration,
    cache: TtlCache<[u8; 32], Option<UserInfo>>,
}

impl TokenReviewAuthenticator {
    /// Reviews through `client`, asking for `audiences` (empty: the kube-apiserver's own).
    pub fn new(
        client: kube::Client,
        audiences: Vec<String>,
        success_ttl: Duration,
        failure_ttl: Duration,
    ) -> Self {
        TokenReviewAuthenticator {
            client,
            audiences,
            success_ttl,
            failure_ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }

    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| AuthError("the TokenReview timed out".into()))?
                .map_err(|e| AuthError(format!("the TokenReview failed: {e}")))?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        let mut groups = user.groups.unwrap_or_default();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Ok(Some(UserInfo {
            name: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups,
            extra: user.extra.unwrap_or_default().into_iter().collect(),
        }))
    }
}

#[async_trait::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        _: &Extensions,
    ) -> Result<Option<UserInfo>, AuthError> {
        let Some(token) = bearer(headers) else {
            return Ok(None);
        };
        let key = digest(token);
        let answer = match self.cache.get(&key) {
            Some(cached) => cached,
            None => {
                // A failed review (the kube-apiserver unreachable) is not cached.
                let answer = self.review(token).await?;
                let ttl = if answer.is_some() {
                    self.success_ttl
                } else {
                    self.failure_ttl
                };
                self.cache.put(key, answer.clone(), ttl);
                answer
            }
        };
        match answer {
            Some(user) => Ok(Some(user)),
            // A bearer token the cluster does not accept is a 401, not "try the next one".
            None => Err(AuthError(
                "the token was not accepted by the TokenReview".into(),
            )),
        }
    }
}

/// The parts of [`Attributes`] a decision depends on (the cache key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct DecisionKey {
    user: String,
    uid: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
    verb: String,
    resource_request: bool,
    group: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    path: String,
}

impl DecisionKey {
    fn of(a: &Attributes) -> Self {
        DecisionKey {
            user: a.user.name.clone(),
            uid: a.user.uid.clone(),
            groups: a.user.groups.clone(),
            extra: a.user.extra.clone(),
            verb: a.verb.clone(),
            resource_request: a.resource_request,
            group: a.api_group.clone(),
            resource: a.resource.clone(),
            subresource: a.subresource.clone(),
            namespace: a.namespace.clone(),
            name: a.name.clone(),
            path: if a.resource_request {
                String::new()
            } else {
                a.path.clone()
            },
        }
    }
}

/// Authorization by the host cluster's `SubjectAccessReview`, cached (allowed and denied TTLs).
pub struct SubjectAccessReviewAuthorizer {
    client: kube::Client,
    allow_ttl: Duration,
    deny_ttl: Duration,
    cache: TtlCache<DecisionKey, Decision>,
}

impl SubjectAccessReviewAuthorizer {
    /// Reviews through `client`.
    pub fn new(client: kube::Client, allow_ttl: Duration, deny_ttl: Duration) -> Self {
        SubjectAccessReviewAuthorizer {
            client,
            allow_ttl,
            deny_ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }

    async fn review(&self, a: &Attributes) -> Result<Decision, String> {
        let spec = SubjectAccessReviewSpec {
            user: Some(a.user.name.clone()),
            uid: (!a.user.uid.is_empty()).then(|| a.user.uid.clone()),
            groups: Some(a.user.groups.clone()),
            extra: (!a.user.extra.is_empty()).then(|| a.user.extra.clone().into_iter().collect()),
            resource_attributes: a.resource_request.then(|| ResourceAttributes {
                group: Some(a.api_group.clone()),
                version: Some(kfp_apiservice::VERSION.to_owned()),
                resource: Some(a.resource.clone()),
                subresource: (!a.subresource.is_empty()).then(|| a.subresource.clone()),
                namespace: (!a.namespace.is_empty()).then(|| a.namespace.clone()),
                name: (!a.name.is_empty()).then(|| a.name.clone()),
                verb: Some(a.verb.clone()),
                ..Default::default()
            }),
            non_resource_attributes: (!a.resource_request).then(|| NonResourceAttributes {
                path: Some(a.path.clone()),
                verb: Some(a.verb.clone()),
            }),
        };
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| "the SubjectAccessReview timed out".to_owned())?
                .map_err(|e| format!("the SubjectAccessReview failed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        Ok(if status.allowed && status.denied != Some(true) {
            Decision::Allow
        } else {
            Decision::Deny(status.reason.unwrap_or_default())
        })
    }
}

#[async_trait::async_trait]
impl Authorizer for SubjectAccessReviewAuthorizer {
    async fn authorize(&self, attrs: &Attributes) -> Decision {
        let key = DecisionKey::of(attrs);
        if let Some(d) = self.cache.get(&key) {
            return d;
        }
        match self.review(attrs).await {
            Ok(d) => {
                let ttl = if d == Decision::Allow {
                    self.allow_ttl
                } else {
                    self.deny_ttl
                };
                self.cache.put(key, d.clone(), ttl);
                d
            }
            Err(e) => {
                // Not cached: the next request asks again.
                tracing::warn!(error = %e, "authorization failed");
                Decision::Deny(format!("authorization could not be decided: {e}"))
            }
        }
    }
}

/// What kube-apiserver's defaults allow without asking, in front of another authorizer.
pub struct DelegatingAuthorizer<A> {
    /// Non-resource paths anyone may `get` without a review (`--authorization-always-allow-paths`;
    /// a trailing `*` matches a prefix).
    pub always_allow_paths: Vec<String>,
    /// The authorizer for everything else.
    pub inner: A,
}

/// Non-resource paths `system:discovery` and `system:public-info-viewer` open to every
/// authenticated user.
fn public_path(path: &str) -> bool {
    matches!(
        path,
        "/api" | "/apis" | "/version" | "/openapi/v2" | "/openapi/v3"
    ) || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path.starts_with("/openapi/v3/")
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

#[async_trait::async_trait]
impl<A: Authorizer> Authorizer for DelegatingAuthorizer<A> {
    async fn authorize(&self, attrs: &Attributes) -> Decision {
        let groups = &attrs.user.groups;
        if groups.iter().any(|g| g == "system:masters") {
            return Decision::Allow;
        }
        if !attrs.resource_request && matches!(attrs.verb.as_str(), "get" | "head") {
            if self
                .always_allow_paths
                .iter()
                .any(|p| path_matches(p, &attrs.path))
            {
                return Decision::Allow;
            }
            if groups.iter().any(|g| g == "system:authenticated") && public_path(&attrs.path) {
                return Decision::Allow;
            }
        }
        self.inner.authorize(attrs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_expire_and_stay_bounded() {
        let c: TtlCache<u32, u32> = TtlCache::new(3);
        c.put(1, 10, Duration::from_secs(60));
        assert_eq!(c.get(&1), Some(10));
        c.put(2, 20, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get(&2), None, "expired");
        for i in 3..10 {
            c.put(i, i, Duration::from_secs(60));
        }
        assert!(c.len() <= 3, "bounded: {}", c.len());
        assert_eq!(c.get(&9), Some(9), "the newest stays");
        assert_eq!(c.get(&1), None, "the oldest went first");
        c.put(100, 1, Duration::ZERO);
        assert_eq!(c.get(&100), None, "a zero TTL caches nothing");
    }

    struct Deny;
    #[async_trait::async_trait]
    impl Authorizer for Deny {
        async fn authorize(&self, _: &Attributes) -> Decision {
            Decision::Deny("no".into())
        }
    }

    #[tokio::test]
    async fn defaults_in_front_of_the_reviews() {
        let a = DelegatingAuthorizer {
            always_allow_paths: vec!["/healthz".into(), "/debug/*".into()],
            inner: Deny,
        };
        let user = |groups: &[&str]| UserInfo {
            name: "u".into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Default::default()
        };
        let path = |p: &str, groups: &[&str]| Attributes {
            user: user(groups),
            verb: "get".into(),
            path: p.into(),
            ..Default::default()
        };
        let authn = ["system:authenticated"];
        assert_eq!(a.authorize(&path("/apis", &authn)).await, Decision::Allow);
        assert_eq!(
            a.authorize(&path(
                "/openapi/v3/apis/pipelines.kubeflow.org/v2beta1",
                &authn
            ))
            .await,
            Decision::Allow
        );
        assert_eq!(
            a.authorize(&path("/version", &authn)).await,
            Decision::Allow
        );
        assert_eq!(a.authorize(&path("/debug/x", &[])).await, Decision::Allow);
        assert!(matches!(
            a.authorize(&path("/metrics", &authn)).await,
            Decision::Deny(_)
        ));
        assert!(
            matches!(a.authorize(&path("/apis", &[])).await, Decision::Deny(_)),
            "anonymous"
        );
        let resource = Attributes {
            user: user(&authn),
            verb: "list".into(),
            resource_request: true,
            api_group: "pipelines.kubeflow.org".into(),
            resource: "pipelines".into(),
            ..Default::default()
        };
        assert!(matches!(a.authorize(&resource).await, Decision::Deny(_)));
        let admin = Attributes {
            user: user(&["system:masters", "system:authenticated"]),
            ..resource
        };
        assert_eq!(a.authorize(&admin).await, Decision::Allow);
    }

    #[test]
    fn bearer_tokens_and_digests() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert_ne!(digest("a"), digest("b"));
    }
}
