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
    /// The KFP REST API (`/apis/v2beta1/...`, `/apis/v1beta1/...`).
    Kfp(KfpOp),
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

impl Target {
    /// Health probes (`/healthz`, `/livez`, `/readyz`, and KFP's `/apis/v2beta1/healthz`, which
    /// KFP serves without authentication too): no authentication, no authorization.
    pub fn is_probe(&self) -> bool {
        matches!(self, Target::Health(_) | Target::Kfp(KfpOp::Healthz))
    }
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
        ["apis", "v2beta1", rest @ ..] => Target::Kfp(kfp(method, rest)),
        ["apis", "v1beta1", ..] => Target::Kfp(KfpOp::V1beta1),
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

/// A KFP v2beta1 REST operation, with its path parameters (percent-decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KfpOp {
    /// `/apis/v2beta1/healthz` (any method).
    Healthz,
    /// `POST /pipelines`.
    CreatePipeline,
    /// `POST /pipelines/create`.
    CreatePipelineAndVersion,
    /// `GET /pipelines/{pipeline_id}`.
    GetPipeline(String),
    /// `GET /pipelines/names/{name}`.
    GetPipelineByName(String),
    /// `GET /pipelines`.
    ListPipelines,
    /// `DELETE /pipelines/{pipeline_id}`.
    DeletePipeline(String),
    /// `PATCH /pipelines/{pipeline_id}`.
    UpdatePipeline(String),
    /// `POST /pipelines/{pipeline_id}/versions`.
    CreatePipelineVersion(String),
    /// `GET /pipelines/{pipeline_id}/versions`.
    ListPipelineVersions(String),
    /// `GET /pipelines/{pipeline_id}/versions/{pipeline_version_id}`.
    GetPipelineVersion(String, String),
    /// `DELETE /pipelines/{pipeline_id}/versions/{pipeline_version_id}`.
    DeletePipelineVersion(String, String),
    /// `PATCH /pipelines/{pipeline_id}/versions/{pipeline_version_id}`.
    UpdatePipelineVersion(String, String),
    /// `/pipelines/upload` (multipart; any method, as KFP's handler).
    UploadPipeline,
    /// `/pipelines/upload_version` (multipart; any method).
    UploadPipelineVersion,
    /// Anything under `/apis/v1beta1/`: not served.
    V1beta1,
    /// A known path with a method it does not take.
    MethodNotAllowed,
    /// No such path.
    NotFound,
}

impl KfpOp {
    /// The operation's name, as KFP's RPCs are named: the metrics and log label.
    pub fn name(&self) -> &'static str {
        match self {
            KfpOp::Healthz => "Healthz",
            KfpOp::CreatePipeline => "CreatePipeline",
            KfpOp::CreatePipelineAndVersion => "CreatePipelineAndVersion",
            KfpOp::GetPipeline(_) => "GetPipeline",
            KfpOp::GetPipelineByName(_) => "GetPipelineByName",
            KfpOp::ListPipelines => "ListPipelines",
            KfpOp::DeletePipeline(_) => "DeletePipeline",
            KfpOp::UpdatePipeline(_) => "UpdatePipeline",
            KfpOp::CreatePipelineVersion(_) => "CreatePipelineVersion",
            KfpOp::ListPipelineVersions(_) => "ListPipelineVersions",
            KfpOp::GetPipelineVersion(..) => "GetPipelineVersion",
            KfpOp::DeletePipelineVersion(..) => "DeletePipelineVersion",
            KfpOp::UpdatePipelineVersion(..) => "UpdatePipelineVersion",
            KfpOp::UploadPipeline => "UploadPipeline",
            KfpOp::UploadPipelineVersion => "UploadPipelineVersion",
            KfpOp::V1beta1 => "V1beta1",
            KfpOp::MethodNotAllowed => "MethodNotAllowed",
            KfpOp::NotFound => "NotFound",
        }
    }

    /// The Kubernetes resource the operation is about ("" for none).
    pub fn resource(&self) -> &'static str {
        match self {
            KfpOp::CreatePipeline
            | KfpOp::CreatePipelineAndVersion
            | KfpOp::GetPipeline(_)
            | KfpOp::GetPipelineByName(_)
            | KfpOp::ListPipelines
            | KfpOp::DeletePipeline(_)
            | KfpOp::UpdatePipeline(_)
            | KfpOp::UploadPipeline => "pipelines",
            KfpOp::CreatePipelineVersion(_)
            | KfpOp::ListPipelineVersions(_)
            | KfpOp::GetPipelineVersion(..)
            | KfpOp::DeletePipelineVersion(..)
            | KfpOp::UpdatePipelineVersion(..)
            | KfpOp::UploadPipelineVersion => "pipelineversions",
            _ => "",
        }
    }

    /// Whether the body is a multipart upload (up to 32 MiB) rather than JSON.
    pub fn is_upload(&self) -> bool {
        matches!(self, KfpOp::UploadPipeline | KfpOp::UploadPipelineVersion)
    }
}

/// A path segment, percent-decoded (`None` when it is empty or not UTF-8 after decoding); a `%`
/// not followed by two hex digits stays as it is.
fn segment(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
        .filter(|s| !s.is_empty())
}

/// The KFP operation of a path under `/apis/v2beta1/`.
fn kfp(method: &Method, rest: &[&str]) -> KfpOp {
    use KfpOp as K;
    let (get, post, patch, delete) = (
        method == Method::GET || method == Method::HEAD,
        method == Method::POST,
        method == Method::PATCH,
        method == Method::DELETE,
    );
    let not_allowed = K::MethodNotAllowed;
    match rest {
        ["healthz"] => K::Healthz,
        ["pipelines", "upload"] => K::UploadPipeline,
        ["pipelines", "upload_version"] => K::UploadPipelineVersion,
        ["pipelines"] if get => K::ListPipelines,
        ["pipelines"] if post => K::CreatePipeline,
        ["pipelines", "create"] if post => K::CreatePipelineAndVersion,
        ["pipelines", "names", name] => match segment(name) {
            Some(n) if get => K::GetPipelineByName(n),
            Some(_) => not_allowed,
            None => K::NotFound,
        },
        ["pipelines", id] => match segment(id) {
            Some(id) if get => K::GetPipeline(id),
            Some(id) if delete => K::DeletePipeline(id),
            Some(id) if patch => K::UpdatePipeline(id),
            Some(_) => not_allowed,
            None => K::NotFound,
        },
        ["pipelines", id, "versions"] => match segment(id) {
            Some(id) if get => K::ListPipelineVersions(id),
            Some(id) if post => K::CreatePipelineVersion(id),
            Some(_) => not_allowed,
            None => K::NotFound,
        },
        ["pipelines", id, "versions", vid] => match (segment(id), segment(vid)) {
            (Some(id), Some(vid)) if get => K::GetPipelineVersion(id, vid),
            (Some(id), Some(vid)) if delete => K::DeletePipelineVersion(id, vid),
            (Some(id), Some(vid)) if patch => K::UpdatePipelineVersion(id, vid),
            (Some(_), Some(_)) => not_allowed,
            _ => K::NotFound,
        },
        ["pipelines"] => not_allowed,
        _ => K::NotFound,
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
        let k = |m: Method, path: &str| match p(m, path) {
            Target::Kfp(op) => op,
            other => panic!("{path}: {other:?}"),
        };
        let base = "/apis/v2beta1/pipelines";
        assert_eq!(k(Method::GET, base), KfpOp::ListPipelines);
        assert_eq!(k(Method::POST, base), KfpOp::CreatePipeline);
        assert_eq!(k(Method::PUT, base), KfpOp::MethodNotAllowed);
        for m in [Method::POST, Method::GET, Method::PUT] {
            assert_eq!(
                k(m.clone(), &format!("{base}/upload")),
                KfpOp::UploadPipeline
            );
            assert_eq!(
                k(m, &format!("{base}/upload_version")),
                KfpOp::UploadPipelineVersion
            );
        }
        assert_eq!(
            k(Method::POST, &format!("{base}/create")),
            KfpOp::CreatePipelineAndVersion
        );
        assert_eq!(
            k(Method::GET, &format!("{base}/create")),
            KfpOp::GetPipeline("create".into()),
            "as grpc-gateway routes it"
        );
        assert_eq!(
            k(Method::GET, &format!("{base}/names/a%2Fb%20c")),
            KfpOp::GetPipelineByName("a/b c".into())
        );
        assert_eq!(
            k(Method::PATCH, &format!("{base}/u1")),
            KfpOp::UpdatePipeline("u1".into())
        );
        assert_eq!(
            k(Method::DELETE, &format!("{base}/u1/versions/v1")),
            KfpOp::DeletePipelineVersion("u1".into(), "v1".into())
        );
        assert_eq!(
            k(Method::POST, &format!("{base}/u1/versions")),
            KfpOp::CreatePipelineVersion("u1".into())
        );
        assert_eq!(
            k(Method::GET, &format!("{base}//versions")),
            KfpOp::NotFound
        );
        assert_eq!(k(Method::GET, "/apis/v2beta1"), KfpOp::NotFound);
        assert_eq!(k(Method::GET, "/apis/v2beta1/runs"), KfpOp::NotFound);
        assert_eq!(k(Method::POST, "/apis/v2beta1/healthz"), KfpOp::Healthz);
        assert_eq!(k(Method::GET, "/apis/v1beta1/pipelines"), KfpOp::V1beta1);
        assert_eq!(segment("100%"), Some("100%".into()), "a lone % stays");
        assert_eq!(segment("%zz%4"), Some("%zz%4".into()));
        assert_eq!(segment("%ff"), None, "not UTF-8");
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
