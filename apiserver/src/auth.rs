//! Authentication and authorization as the stack sees them: who the user is ([`UserInfo`]) and
//! whether they may do what they ask ([`Decision`]).
//!
//! Today: bearer tokens from a static set (the `--dev` admin token, or `--token-auth-file`) and
//! an allow-all authorizer for authenticated users. The aggregated-mode issue adds front-proxy
//! certificates, client certificates, TokenReview and SubjectAccessReview behind the same
//! types, so handlers do not change.

use std::collections::HashMap;

use http::HeaderMap;

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// Groups (always including `system:authenticated`).
    pub groups: Vec<String>,
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

    /// The user a request authenticates as, if any.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<UserInfo> {
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

fn user_info(name: &str, groups: &[&str]) -> UserInfo {
    let mut groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    UserInfo {
        name: name.to_owned(),
        groups,
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
        assert_eq!(a.authenticate(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().unwrap(),
        );
        let u = a.authenticate(&h).unwrap();
        assert_eq!(u.name, "admin");
        assert!(u.groups.contains(&"system:authenticated".to_owned()));
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cres".parse().unwrap(),
        );
        assert_eq!(a.authenticate(&h), None);
    }

    #[test]
    fn token_files() {
        let a = TokenAuthenticator::from_csv("# c\nt1,alice,1,\"devs,ops\"\nt2,bob\n").unwrap();
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Bearer t1".parse().unwrap());
        assert_eq!(
            a.authenticate(&h).unwrap().groups,
            vec!["devs", "ops", "system:authenticated"]
        );
        assert!(TokenAuthenticator::from_csv("justonefield").is_err());
    }
}
