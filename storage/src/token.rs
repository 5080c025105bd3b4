//! Continue tokens, in kube-apiserver's format: base64url of
//! `{"v":"meta.k8s.io/v1","rv":N,"start":"<namespace>/<name>\u0000"}` — the revision the list is
//! pinned to and the first key of the next page. Opaque to clients.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde::{Deserialize, Serialize};

use crate::{Revision, StoreError};

#[derive(Serialize, Deserialize)]
struct Wire {
    v: String,
    rv: i64,
    start: String,
}

/// A decoded continue token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContinueToken {
    /// The revision the list is pinned to.
    pub revision: Revision,
    /// The last key returned: the next page starts after it.
    pub after: (String, String),
}

impl ContinueToken {
    /// Encodes the token.
    pub fn encode(&self) -> String {
        let wire = Wire {
            v: "meta.k8s.io/v1".into(),
            rv: self.revision.0 as i64,
            start: format!("{}/{}\u{0}", self.after.0, self.after.1),
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
        };
        let s = t.encode();
        let raw = URL_SAFE.decode(&s).unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            r#"{"v":"meta.k8s.io/v1","rv":17,"start":"team-a/hello\u0000"}"#
        );
        assert_eq!(ContinueToken::decode(&s).unwrap(), t);
        assert!(ContinueToken::decode("!!").is_err());
        assert!(ContinueToken::decode(&URL_SAFE.encode(b"{}")).is_err());
    }
}
