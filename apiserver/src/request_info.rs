//! `RequestInfo`: what a request is about, read from its method, path and query before
//! authentication and authorization run (kube-apiserver's `requestinfo.go`). It is also the
//! router: handlers dispatch on it, so authorization and handling can never disagree.
//!
//! KFP REST paths (`/apis/v2beta1/...`) look like a Kubernetes group path with group `v2beta1`;
//! they are recognised first.

use http::Method;

use crate::kube::params::Query;

/// The API group served.
pub const GROUP: &str = kfp_apiservice::GROUP;
/// The version served.
pub const VERSION: &str = kfp_apiservice::VERSION;

/// What a request targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A resource of `pipelines.kubeflow.org/v2beta1`.
    Resource(ResourceRequest),
    /// The KFP REST API (`/apis/v2beta1/...`).
    Kfp(String),
    /// `/api`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`.
    Discovery(DiscoveryPath),
    /// `/openapi/v2`, `/openapi/v3`, `/openapi/v3/apis/<group>/<version>`.
    OpenApi(OpenApiPath),
    /// `/healthz`, `/livez`, `/readyz` (and their `/...` sub-checks).
    Health(String),
    /// `/version`.
    Version,
    /// `/metrics`.
    Metrics,
    /// Anything else: 404.
    NotFound,
}

/// Discovery documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryPath {
    /// `/api`.
    Api,
    /// `/apis`.
    Apis,
    /// `/apis/pipelines.kubeflow.org`.
    Group,
    /// `/apis/pipelines.kubeflow.org/v2beta1`.
    GroupVersion,
}

/// OpenAPI documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenApiPath {
    /// `/openapi/v2`.
    V2,
    /// `/openapi/v3`.
    V3Root,
    /// `/openapi/v3/apis/pipelines.kubeflow.org/v2beta1`.
    V3Group,
}

/// A request for a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRequest {
    /// The Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'static str,
    /// `pipelines` or `pipelineversions` (or an unknown plural, answered 404 by the handler).
    pub resource: String,
    /// The namespace; `None` for all-namespaces paths.
    pub namespace: Option<String>,
    /// The object name, when the path names one.
    pub name: Option<String>,
    /// `status`, when the path names the subresource.
    pub subresource: Option<String>,
}

/// Parses a request. `query` is the parsed query string (for `watch=true`).
pub fn parse(method: &Method, path: &str, query: &Query) -> Target {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let parts: Vec<&str> = if parts == [""] { Vec::new() } else { parts };
    match parts.as_slice() {
        ["apis", "v2beta1", ..] | ["apis", "v1beta1", ..] => Target::Kfp(path.to_owned()),
        ["api"] => Target::Discovery(DiscoveryPath::Api),
        ["apis"] => Target::Discovery(DiscoveryPath::Apis),
        ["apis", GROUP] => Target::Discovery(DiscoveryPath::Group),
        ["apis", GROUP, VERSION] => Target::Discovery(DiscoveryPath::GroupVersion),
        ["apis", GROUP, VERSION, rest @ ..] => resource(method, rest, query),
        ["openapi", "v2"] => Target::OpenApi(OpenApiPath::V2),
        ["openapi", "v3"] => Target::OpenApi(OpenApiPath::V3Root),
        ["openapi", "v3", "apis", GROUP, VERSION] => Target::OpenApi(OpenApiPath::V3Group),
        [h @ ("healthz" | "livez" | "readyz"), ..] => Target::Health((*h).to_owned()),
        ["version"] => Target::Version,
        ["metrics"] => Target::Metrics,
        _ => Target::NotFound,
    }
}

fn resource(method: &Method, rest: &[&str], query: &Query) -> Target {
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    if matches!(rest, ["namespaces", _] | ["namespaces", "", ..]) {
        // The Namespace object itself is not served here, and `/namespaces//...` names none.
        return Target::NotFound;
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s] => (*r, Some(*n), Some(*s)),
        _ => return Target::NotFound,
    };
    if resource.is_empty() || name.is_some_and(str::is_empty) {
        return Target::NotFound;
    }
    let watch = legacy_watch || query.watch();
    let verb = match (method, name.is_some()) {
        (&Method::GET | &Method::HEAD, _) if watch => "watch",
        (&Method::GET | &Method::HEAD, true) => "get",
        (&Method::GET | &Method::HEAD, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    };
    Target::Resource(ResourceRequest {
        verb,
        resource: resource.to_owned(),
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: Method, path: &str) -> Target {
        let (path, q) = path.split_once('?').unwrap_or((path, ""));
        parse(&method, path, &Query::parse(q))
    }

    fn res(
        verb: &'static str,
        resource: &str,
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> Target {
        Target::Resource(ResourceRequest {
            verb,
            resource: resource.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        })
    }

    #[test]
    fn kfp_paths_are_recognised_before_group_paths() {
        assert_eq!(
            p(Method::GET, "/apis/v2beta1/pipelines"),
            Target::Kfp("/apis/v2beta1/pipelines".into())
        );
        assert_eq!(
            p(Method::POST, "/apis/v2beta1/pipelines/upload"),
            Target::Kfp("/apis/v2beta1/pipelines/upload".into())
        );
        assert_eq!(
            p(Method::GET, "/apis/v2beta1"),
            Target::Kfp("/apis/v2beta1".into())
        );
    }

    #[test]
    fn resource_paths_and_verbs() {
        let base = "/apis/pipelines.kubeflow.org/v2beta1";
        assert_eq!(
            p(Method::GET, &format!("{base}/namespaces/a/pipelines")),
            res("list", "pipelines", Some("a"), None, None)
        );
        assert_eq!(
            p(
                Method::GET,
                &format!("{base}/namespaces/a/pipelines?watch=true")
            ),
            res("watch", "pipelines", Some("a"), None, None)
        );
        assert_eq!(
            p(Method::GET, &format!("{base}/watch/namespaces/a/pipelines")),
            res("watch", "pipelines", Some("a"), None, None)
        );
        assert_eq!(
            p(Method::GET, &format!("{base}/pipelineversions")),
            res("list", "pipelineversions", None, None, None)
        );
        assert_eq!(
            p(Method::GET, &format!("{base}/namespaces/a/pipelines/x")),
            res("get", "pipelines", Some("a"), Some("x"), None)
        );
        assert_eq!(
            p(
                Method::PUT,
                &format!("{base}/namespaces/a/pipelineversions/x/status")
            ),
            res(
                "update",
                "pipelineversions",
                Some("a"),
                Some("x"),
                Some("status")
            )
        );
        assert_eq!(
            p(Method::DELETE, &format!("{base}/namespaces/a/pipelines")),
            res("deletecollection", "pipelines", Some("a"), None, None)
        );
        assert_eq!(
            p(Method::DELETE, &format!("{base}/namespaces/a/pipelines/x")),
            res("delete", "pipelines", Some("a"), Some("x"), None)
        );
        assert_eq!(
            p(Method::PATCH, &format!("{base}/namespaces/a/pipelines/x")),
            res("patch", "pipelines", Some("a"), Some("x"), None)
        );
        assert_eq!(
            p(Method::POST, &format!("{base}/namespaces/a/pipelines")),
            res("create", "pipelines", Some("a"), None, None)
        );
        assert_eq!(
            p(Method::GET, &format!("{base}/namespaces/a")),
            Target::NotFound
        );
        assert_eq!(
            p(Method::GET, &format!("{base}/namespaces//pipelines")),
            Target::NotFound,
            "an empty namespace segment names nothing"
        );
        for (q, verb) in [
            ("watch=TRUE", "watch"),
            ("watch", "watch"),
            ("watch=yes", "watch"),
            ("watch=False", "list"),
            ("watch=0", "list"),
        ] {
            match p(Method::GET, &format!("{base}/namespaces/a/pipelines?{q}")) {
                Target::Resource(r) => assert_eq!(r.verb, verb, "{q}: as apimachinery reads bools"),
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    #[test]
    fn discovery_openapi_and_health() {
        assert_eq!(
            p(Method::GET, "/apis"),
            Target::Discovery(DiscoveryPath::Apis)
        );
        assert_eq!(
            p(Method::GET, "/api"),
            Target::Discovery(DiscoveryPath::Api)
        );
        assert_eq!(
            p(Method::GET, "/apis/pipelines.kubeflow.org/v2beta1"),
            Target::Discovery(DiscoveryPath::GroupVersion)
        );
        assert_eq!(
            p(
                Method::GET,
                "/openapi/v3/apis/pipelines.kubeflow.org/v2beta1?hash=x"
            ),
            Target::OpenApi(OpenApiPath::V3Group)
        );
        assert_eq!(
            p(Method::GET, "/readyz/store"),
            Target::Health("readyz".into())
        );
        assert_eq!(p(Method::GET, "/apis/other.group/v1"), Target::NotFound);
    }
}
