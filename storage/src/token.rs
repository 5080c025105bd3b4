//! Continue tokens, in kube-apiserver's format: base64url of
//! `{"v":"meta.k8s.io/v1","rv":N,"start":"<namespace>/<name>\u0000"}` — the revision the list is
//! pinned to and the first key of the next page. Opaque to clients. One addition of ours:
//! `"remaining":N`, the number of items after that key at that revision (unfiltered lists), so
//! that each following page's `remainingItemCount` is arithmetic instead of a count of the rest
//! (a full list of N objects would otherwise count N²/(2·limit) rows).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde::{Deserialize, Serialize};

use crate::{Revision, StoreError};

#[derive(Serialize, Deserialize)]
struct Wire {
    v: String,
    rv: i64,
    start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remaining: Option<u64>,
}

/// A decoded continue token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContinueToken {
    /// The revision the list is pinned to.
    pub revision: Revision,
    /// The last key returned: the next page starts after it.
    pub after: (String, String),
    /// How many items follow `after` at `revision`, where the list that made the token knew
    /// (no label or field selector). Only ever reported back as `remainingItemCount`.
    pub remaining: Option<u64>,
}

impl ContinueToken {
    /// Encodes the token.
    pub fn encode(&self) -> String {
        let wire = Wire {
            v: "meta.k8s.io/v1".into(),
            rv: self.revision.0 as i64,
            start: format!("{}/{}\u{0}", self.after.0, self.after.1),
            remaining: self.remaining,
        };
        URL_SAFE.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Decodes a token; a malformed one is `Invalid` (400), as in kube-apiserver.
    pub fn decode(s: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Invalid(format!("continue key is not valid: {why}"));
        let bytes = URL_SAFE
            .decode(s)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
            .map_err(|_| bad("not base64"))?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| bad("not JSON"))?;
        if wire.v != "meta.k8s.io/v1" {
            return Err(bad(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
        if wire.rv <= 0 {
            return Err(bad("incorrect encoded start resourceVersion"));
        }
        let start = wire
            .start
            .strip_suffix('\u{0}')
            .ok_or_else(|| bad("bad start key"))?;
        let (ns, name) = start.split_once('/').ok_or_else(|| bad("bad start key"))?;
        Ok(ContinueToken {
            revision: Revision(wire.rv as u64),
            after: (ns.to_owned(), name.to_owned()),
            remaining: wire.remaining,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_format() {
        let t = ContinueToken {
            revision: Revision(17),
            after: ("team-a".into(), "hello".into()),
            remaining: None,
        };
        let s = t.encode();
        let raw = URL_SAFE.decode(&s).unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            r#"{"v":"meta.k8s.io/v1","rv":17,"start":"team-a/hello\u0000"}"#
        );
        assert_eq!(ContinueToken::decode(&s).unwrap(), t);
        let counted = ContinueToken {
            remaining: Some(1200),
            ..t.clone()
        };
        let raw = URL_SAFE.decode(counted.encode()).unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            r#"{"v":"meta.k8s.io/v1","rv":17,"start":"team-a/hello\u0000","remaining":1200}"#
        );
        assert_eq!(ContinueToken::decode(&counted.encode()).unwrap(), counted);
        let negative = URL_SAFE
            .encode(br#"{"v":"meta.k8s.io/v1","rv":17,"start":"a/b\u0000","remaining":-1}"#);
        assert!(ContinueToken::decode(&negative).is_err());
        assert!(ContinueToken::decode("!!").is_err());
        assert!(ContinueToken::decode(&URL_SAFE.encode(b"{}")).is_err());
    }
}
