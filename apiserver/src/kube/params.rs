//! Query parameters of the Kubernetes routes, parsed once with kube-apiserver's validation rules
//! (`resourceVersionMatch`, `sendInitialEvents`, `dryRun`, `fieldValidation`, ...).

use std::time::Duration;

use kfp_apiservice::decode::FieldValidation;
use kfp_apiservice::resource::Resource;
use kfp_storage::{FieldSelector, LabelSelector, ReadAt, Revision};

use crate::error::ApiError;

/// The raw query string, decoded into pairs (repeated keys kept in order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// Parses `a=b&c=d` (form-urlencoded).
    pub fn parse(q: &str) -> Self {
        Query(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `watch`, read as kube-apiserver reads every boolean query parameter.
    pub fn watch(&self) -> bool {
        self.flag("watch")
    }

    /// A boolean query parameter as apimachinery's `Convert_Slice_string_To_bool` reads it:
    /// absent is false; `0` and `false` (any case) are false; anything else — `TRUE`, `yes`,
    /// an empty value (`?watch`) — is true.
    pub fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
        }
    }
}

/// The largest page a list asks the store for: far above any real collection, and small enough
/// that the store's `LIMIT n + 1` cannot overflow.
pub const MAX_LIMIT: usize = 1 << 40;

/// The longest watch `timeoutSeconds` is taken to ask for (a year); larger values mean "as long
/// as possible", never an overflowing deadline.
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The default field manager: the User-Agent up to its first `/`, as kube-apiserver does.
pub fn default_manager(user_agent: Option<&str>) -> String {
    user_agent
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect()
}

/// List and watch options.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 means none).
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion` as sent ("" when absent).
    pub resource_version: String,
    /// Which state a list reads.
    pub at: ReadAt,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
}

/// `resourceVersion` of a GET: "" and "0" read the current state; `N` any state at least as
/// new as N (the current one, or 504 when the store has not reached N).
pub fn get_resource_version(q: &Query) -> Result<ReadAt, ApiError> {
    match q.get("resourceVersion").unwrap_or_default() {
        "" | "0" => Ok(ReadAt::Latest),
        rv => parse_rv(rv).map(ReadAt::NotOlderThan),
    }
}

fn parse_rv(s: &str) -> Result<Revision, ApiError> {
    Revision::parse(s).ok_or_else(|| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: \"{s}\": must be a decimal resource version"
        ))
    })
}

impl ListOptions {
    /// Parses and validates list/watch options for `resource`.
    pub fn parse(q: &Query, res: &Resource, watch: bool) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(
            q.get("fieldSelector").unwrap_or_default(),
            &crate::store::selectable_fields(res),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let limit = match q.get("limit") {
            None | Some("") => None,
            Some(l) => match l.parse::<i64>() {
                Ok(n) if n > 0 => Some((n as u64).min(MAX_LIMIT as u64) as usize),
                Ok(_) => None,
                Err(_) => return Err(ApiError::bad_request(format!("invalid limit {l:?}"))),
            },
        };
        let continue_token = q
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        let resource_version = q.get("resourceVersion").unwrap_or_default().to_owned();
        let rv_match = q.get("resourceVersionMatch").unwrap_or_default();
        let send_initial_events = q.flag("sendInitialEvents");
        let bookmarks = q.flag("allowWatchBookmarks");
        let mut invalid = Vec::new();
        if !matches!(rv_match, "" | "NotOlderThan" | "Exact") {
            invalid.push(format!(
                "resourceVersionMatch: Unsupported value: \"{rv_match}\": supported values: \"Exact\", \"NotOlderThan\""
            ));
        }
        if !rv_match.is_empty() && continue_token.is_some() {
            invalid.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided".into());
        }
        if !rv_match.is_empty() && resource_version.is_empty() && !watch {
            invalid.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into());
        }
        if rv_match == "Exact" && resource_version == "0" {
            invalid.push("resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into());
        }
        if send_initial_events {
            if !watch {
                invalid.push(
                    "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list".into(),
                );
            } else if rv_match != "NotOlderThan" {
                invalid.push("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into());
            }
        } else if watch && !rv_match.is_empty() {
            invalid.push("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into());
        }
        if !invalid.is_empty() {
            return Err(ApiError::invalid_list_options(invalid));
        }
        if !watch && continue_token.is_some() && !matches!(resource_version.as_str(), "" | "0") {
            // kube-apiserver's storage refuses this before reading (etcd3 GetList).
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let at = match (resource_version.as_str(), rv_match) {
            ("" | "0", _) => ReadAt::Latest,
            (rv, "Exact") => ReadAt::Exact(parse_rv(rv)?),
            (rv, _) => ReadAt::NotOlderThan(parse_rv(rv)?),
        };
        let timeout =
            match q.get("timeoutSeconds") {
                None | Some("") => None,
                Some(t) => Some(
                    Duration::from_secs(t.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
                    })?)
                    .min(MAX_WATCH_TIMEOUT),
                ),
            };
        Ok(ListOptions {
            labels,
            fields,
            limit,
            continue_token,
            resource_version,
            at,
            send_initial_events,
            bookmarks,
            timeout,
        })
    }
}

/// Write options: `dryRun`, `fieldManager`, `fieldValidation`, `force`.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (apply only).
    pub force: bool,
}

impl WriteOptions {
    /// Parses and validates, as kube-apiserver validates `CreateOptions`, `UpdateOptions` and
    /// `PatchOptions` (`kind`): invalid values are 422 `Invalid` naming the options kind.
    pub fn parse(q: &Query, kind: &str, is_apply: bool) -> Result<Self, ApiError> {
        let mut invalid = Vec::new();
        let dry_run_values: Vec<&str> = q.all("dryRun").collect();
        if dry_run_values.iter().any(|v| *v != "All") {
            invalid.push(format!(
                "dryRun: Unsupported value: {dry_run_values:?}: supported values: \"All\""
            ));
        }
        let dry_run = !dry_run_values.is_empty();
        let field_manager = q
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        if let Some(m) = &field_manager
            && m.len() > 128
        {
            invalid.push("fieldManager: Too long: may not be more than 128 bytes".to_owned());
        }
        let field_validation = FieldValidation::parse(q.get("fieldValidation").unwrap_or_default())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "fieldValidation: Unsupported value: \"{}\": supported values: \"Ignore\", \"Strict\", \"Warn\"",
                    q.get("fieldValidation").unwrap_or_default()
                ))
            })?;
        let force = q.flag("force");
        if force && !is_apply {
            invalid.push("force: Forbidden: may not be specified for non-apply patch".to_owned());
        }
        if is_apply && field_manager.is_none() {
            invalid.push("fieldManager: Required value: is required for apply patch".to_owned());
        }
        if !invalid.is_empty() {
            return Err(ApiError::invalid_options(kind, invalid));
        }
        Ok(WriteOptions {
            dry_run,
            field_manager,
            field_validation,
            force,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(q: &str, watch: bool) -> Result<ListOptions, ApiError> {
        ListOptions::parse(
            &Query::parse(q),
            Resource::by_plural("pipelineversions").unwrap(),
            watch,
        )
    }

    #[test]
    fn watch_list_rules() {
        assert!(
            list(
                "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
                true
            )
            .is_ok()
        );
        let e = list("sendInitialEvents=true", true).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            list(
                "sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
                false
            )
            .is_err()
        );
        assert!(list("resourceVersionMatch=Exact&resourceVersion=0", false).is_err());
        assert!(list("resourceVersionMatch=Exact", false).is_err());
        assert!(
            list(
                "resourceVersion=5&resourceVersionMatch=Exact&continue=x",
                false
            )
            .is_err()
        );
        assert_eq!(
            list("resourceVersion=5&resourceVersionMatch=Exact", false)
                .unwrap()
                .at,
            ReadAt::Exact(Revision(5))
        );
        assert_eq!(
            list("resourceVersion=5", false).unwrap().at,
            ReadAt::NotOlderThan(Revision(5))
        );
        assert_eq!(
            list("resourceVersion=0&limit=500", false).unwrap().limit,
            Some(500)
        );
        assert!(list("fieldSelector=spec.pipelineName%3Dx", false).is_ok());
        assert!(list("fieldSelector=spec.nope%3Dx", false).is_err());
        assert!(list("resourceVersion=abc", false).is_err());
    }

    #[test]
    fn write_options() {
        assert!(
            WriteOptions::parse(
                &Query::parse("dryRun=All&fieldManager=m"),
                "PatchOptions",
                false
            )
            .unwrap()
            .dry_run
        );
        let e =
            WriteOptions::parse(&Query::parse("dryRun=Some"), "CreateOptions", false).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert!(
            e.message
                .starts_with("CreateOptions.meta.k8s.io \"\" is invalid: dryRun"),
            "{}",
            e.message
        );
        let e =
            WriteOptions::parse(&Query::parse("force=true"), "PatchOptions", false).unwrap_err();
        assert_eq!(
            e.message,
            "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
        );
        assert!(
            WriteOptions::parse(&Query::parse("force=true"), "PatchOptions", true)
                .is_err_and(|e| e.code == 422),
            "apply needs a field manager"
        );
        assert!(
            WriteOptions::parse(
                &Query::parse("force=true&fieldManager=kubectl"),
                "PatchOptions",
                true
            )
            .unwrap()
            .force
        );
        assert!(
            WriteOptions::parse(
                &Query::parse("fieldValidation=Bogus"),
                "PatchOptions",
                false
            )
            .is_err()
        );
    }
}
