//! Authentication and authorization as the stack sees them: [`Authenticator`] (who the user
//! is: [`UserInfo`] with groups and extra) and [`Authorizer`] (whether they may do what the
//! Kubernetes [`Attributes`] of the request say: [`Decision`]). Both are async traits, so
//! TokenReview and SubjectAccessReview implementations (aggregated mode) plug in without
//! touching the stack; [`Union`] chains authenticators in order, first answer wins.
//!
//! Implementations here: bearer tokens from a static set (the `--dev` admin token, or
//! `--token-auth-file`) and [`AllowAuthenticated`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::{Extensions, HeaderMap};

/// An authenticated user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// The user's uid, when the authenticator knows one.
    pub uid: String,
    /// Groups (always including `system:authenticated`).
    pub groups: Vec<String>,
    /// Extra attributes (scopes, credential ids), as `X-Remote-Extra-*` carries them.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The verified client certificate chain of the connection (leaf first, DER), put into each
/// request's extensions by the TLS acceptor.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<rustls::pki_types::CertificateDer<'static>>>);

/// Why authentication could not decide (the authenticator's backend failed): 401 with the
/// reason logged, as kube-apiserver answers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed: {0}")]
pub struct AuthError(pub String);

/// Who a request is from. `Ok(None)`: not this authenticator's kind of credential (the next one
/// is asked); `Ok(Some)`: authenticated; `Err`: a credential of its kind that is not valid.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    /// Authenticates from the request's headers and extensions (peer certificates).
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<UserInfo>, AuthError>;
}

/// Authenticators asked in order; the first that answers wins.
pub struct Union(pub Vec<Arc<dyn Authenticator>>);

#[async_trait::async_trait]
impl Authenticator for Union {
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<Option<UserInfo>, AuthError> {
        for a in &self.0 {
            if let Some(u) = a.authenticate(headers, extensions).await? {
                return Ok(Some(u));
            }
        }
        Ok(None)
    }
}

/// What a request asks to do, in Kubernetes terms (the SubjectAccessReview attributes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, ...; `get` for paths).
    pub verb: String,
    /// Whether it names a resource (else a non-resource path such as `/metrics`).
    pub resource_request: bool,
    /// The API group.
    pub api_group: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource (`status`).
    pub subresource: String,
    /// The namespace ("" for all namespaces).
    pub namespace: String,
    /// The object name.
    pub name: String,
    /// The URL path.
    pub path: String,
}

impl Attributes {
    /// kube-apiserver's 403 message for these attributes.
    pub fn forbidden_message(&self, reason: &str) -> String {
        let user = &self.user.name;
        let mut m = if !self.resource_request {
            format!(
                "forbidden: User {user:?} cannot {} path {:?}",
                self.verb, self.path
            )
        } else {
            let what = if self.name.is_empty() {
                format!("{}.{}", self.resource, self.api_group)
            } else {
                format!("{}.{} {:?}", self.resource, self.api_group, self.name)
            };
            let resource = if self.subresource.is_empty() {
                self.resource.clone()
            } else {
                format!("{}/{}", self.resource, self.subresource)
            };
            let scope = if self.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {:?}", self.namespace)
            };
            format!(
                "{what} is forbidden: User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                self.verb, self.api_group
            )
        };
        if !reason.is_empty() {
            m.push_str(": ");
            m.push_str(reason);
        }
        m
    }
}

/// Whether a request may proceed.
#[async_trait::async_trait]
pub trait Authorizer: Send + Sync {
    /// Decides.
    async fn authorize(&self, attrs: &Attributes) -> Decision;
}

/// Every authenticated user may do everything (development; the aggregated-mode issue brings
/// SubjectAccessReview).
pub struct AllowAuthenticated;

#[async_trait::async_trait]
impl Authorizer for AllowAuthenticated {
    async fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs
            .user
            .groups
            .iter()
            .any(|g| g == "system:authenticated")
        {
            Decision::Allow
        } else {
            Decision::Deny("anonymous requests are not allowed".into())
        }
    }
}

/// An authorization decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with the reason for the 403 message.
    Deny(String),
}

/// Static bearer tokens -> users.
#[derive(Clone, Debug, Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    /// One token for one user.
    pub fn single(token: &str, user: &str, groups: &[&str]) -> Self {
        let mut tokens = HashMap::new();
        tokens.insert(token.to_owned(), user_info(user, groups));
        TokenAuthenticator { tokens }
    }

    /// Reads a kube-apiserver style token file: `token,user,uid,"group1,group2"` per line.
    pub fn from_csv(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.splitn(4, ',').collect();
            if fields.len() < 2 || fields[0].is_empty() || fields[1].is_empty() {
                return Err(format!(
                    "token file line {}: expected token,user[,uid[,\"groups\"]]",
                    i + 1
                ));
            }
            let groups: Vec<&str> = fields
                .get(3)
                .map(|g| {
                    g.trim_matches('"')
                        .split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(fields[0].to_owned(), user_info(fields[1], &groups));
        }
        Ok(TokenAuthenticator { tokens })
    }

    /// The user a bearer token names, if any.
    pub fn lookup(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?
            .trim();
        // Compare against every token without early exit on the first byte mismatch.
        let mut found = None;
        for (t, user) in &self.tokens {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(user.clone());
            }
        }
        found
    }
}

#[async_trait::async_trait]
impl Authenticator for TokenAuthenticator {
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        _: &Extensions,
    ) -> Result<Option<UserInfo>, AuthError> {
        // A bearer token that is none of ours is not an error here: with further authenticators
        // (TokenReview) the chain goes on; alone, the stack answers 401.
        Ok(self.lookup(headers))
    }
}

fn user_info(name: &str, groups: &[&str]) -> UserInfo {
    let mut groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    UserInfo {
        name: name.to_owned(),
        groups,
        ..Default::default()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let a = TokenAuthenticator::single("s3cret", "admin", &["system:masters"]);
        let mut h = HeaderMap::new();
        assert_eq!(a.lookup(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        let u = a.lookup(&h).unwrap();
        assert_eq!(u.name, "admin");
        assert!(u.groups.contains(&"system:authenticated".to_owned()));
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cres".parse().unwrap(),
        );
        assert_eq!(a.lookup(&h), None);
    }

    #[test]
    fn token_files() {
        let a = TokenAuthenticator::from_csv("# c\nt1,alice,1,\"devs,ops\"\nt2,bob\n").unwrap();
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Bearer t1".parse().unwrap());
        assert_eq!(
            a.lookup(&h).unwrap().groups,
            vec!["devs", "ops", "system:authenticated"]
        );
        assert!(TokenAuthenticator::from_csv("justonefield").is_err());
    }
}
