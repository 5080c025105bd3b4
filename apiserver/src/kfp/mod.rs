//! The KFP v2beta1 REST view (`/apis/v2beta1/pipelines...`, `shared/kfp/KFP_REST_FACTS.md`) over
//! the same registry, strategies and store as the Kubernetes routes: what kfp.Client uploads is
//! the Pipeline / PipelineVersion that kubectl sees at once, and what kubectl applies is what
//! kfp.Client lists. This module decodes KFP's requests (snake_case or lowerCamelCase JSON,
//! unknown fields refused, multipart uploads, filters, page tokens), maps them onto registry
//! calls and answers KFP's shapes; it writes nothing itself.
//!
//! Authorization happens here, not in the stack's authorization layer: a KFP request's
//! Kubernetes attributes need what only the handler knows (the namespace inside a JSON body, the
//! namespace and name of the object an id names). Every operation authorizes through the same
//! [`crate::auth::Authorizer`] with the attributes the Kubernetes view would use (`pipelines` for
//! pipeline operations, `pipelineversions` for version operations; upload = create of both)
//! before it reads a large body, writes or returns anything.
//!
//! Deliberate differences from KFP 2.17 are listed in `docs/kfp-rest-api.md`.

pub mod error;
pub mod fetch;
pub mod list;
pub mod upload;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use kfp_apiservice::convert::{
    RestPipeline, RestPipelineVersion, pipeline_from_rest, pipeline_to_rest, version_from_rest,
    version_object_name, version_to_rest,
};
use kfp_apiservice::decode::FieldValidation;
use kfp_apiservice::resource::Resource;
use kfp_apiservice::types::{Pipeline, PipelineVersion};
use kfp_apiservice::{GROUP, ir, names};
use kfp_storage::query::{Column, Op, Predicate, QueryRequest, Value as QValue};
use kfp_storage::{IndexColumn, Object, Preconditions, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::{App, MAX_BODY_BYTES};
use crate::auth::{Attributes, Decision, UserInfo};
use crate::body::Body;
use crate::kube::params::Query;
use crate::layers::ReqBody;
use crate::registry::{DeleteOptions, Patch, Propagation, RegistryError, WriteOptions};
use crate::request_info::KfpOp;
use error::{Code, KfpError, json_response};
use list::{Filter, Listing, PageToken, Sort};

/// The field manager of writes made through the KFP view.
pub const FIELD_MANAGER: &str = "kfp-rest-api";

/// How the KFP view maps KFP's namespaces onto Kubernetes namespaces, and what it may download.
#[derive(Clone, Debug)]
pub struct KfpConfig {
    /// KFP's multi-user mode: namespaces come from requests; an empty one is shared.
    pub multi_user: bool,
    /// Single-user mode: every pipeline lives in this namespace, whatever a request says.
    pub default_namespace: String,
    /// Multi-user mode: where shared pipelines (empty namespace) live. Every authenticated user
    /// may read them; writing needs rights on this namespace.
    pub shared_namespace: String,
    /// What `package_url` may download.
    pub url_policy: fetch::UrlPolicy,
}

impl Default for KfpConfig {
    fn default() -> Self {
        KfpConfig {
            multi_user: false,
            default_namespace: "default".into(),
            shared_namespace: "kubeflow".into(),
            url_policy: fetch::UrlPolicy::default(),
        }
    }
}

/// The namespace the KFP view worked in, for the request log line.
#[derive(Clone, Debug)]
pub struct KfpNamespace(pub String);

fn pipelines() -> &'static Resource {
    Resource::by_plural(Pipeline::PLURAL).expect("pipelines is in the resource table")
}

fn versions() -> &'static Resource {
    Resource::by_plural(PipelineVersion::PLURAL).expect("pipelineversions is in the resource table")
}

/// One KFP request being answered.
struct Call<'a> {
    app: &'a App,
    cfg: &'a KfpConfig,
    user: UserInfo,
    query: Query,
    content_type: Option<String>,
    path: String,
    /// The unread body (behind a lock only so that `Call` is `Sync`; taken once).
    body: std::sync::Mutex<Option<ReqBody>>,
    namespace: String,
}

/// Answers a KFP request that passed authentication (the body not read yet).
pub async fn serve(
    app: Arc<App>,
    op: KfpOp,
    parts: http::request::Parts,
    body: ReqBody,
) -> Response<Body> {
    let mut call = Call {
        app: &app,
        cfg: &app.kfp,
        user: parts
            .extensions
            .get::<UserInfo>()
            .cloned()
            .unwrap_or_default(),
        query: parts.extensions.get::<Query>().cloned().unwrap_or_default(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        path: parts.uri.path().to_owned(),
        body: std::sync::Mutex::new(Some(body)),
        namespace: String::new(),
    };
    let upload = op.is_upload();
    let result = call.run(&op).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) if upload => e.upload_response(),
        Err(e) => e.gateway_response(),
    };
    resp.extensions_mut()
        .insert(KfpNamespace(std::mem::take(&mut call.namespace)));
    resp
}

fn ok_json(v: &impl Serialize) -> Result<Response<Body>, KfpError> {
    let text = serde_json::to_string(v).map_err(|e| KfpError::internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, text))
}

/// `ListPipelinesResponse`, empty fields omitted (an empty list is `{}`).
#[derive(Serialize)]
struct PipelineList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pipelines: Vec<RestPipeline>,
    #[serde(skip_serializing_if = "is_zero")]
    total_size: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    next_page_token: String,
}

/// `ListPipelineVersionsResponse`.
#[derive(Serialize)]
struct VersionList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pipeline_versions: Vec<RestPipelineVersion>,
    #[serde(skip_serializing_if = "String::is_empty")]
    next_page_token: String,
    #[serde(skip_serializing_if = "is_zero")]
    total_size: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `CreatePipelineAndVersionRequest`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBoth {
    #[serde(default)]
    pipeline: Option<RestPipeline>,
    #[serde(default, alias = "pipelineVersion")]
    pipeline_version: Option<RestPipelineVersion>,
}

/// Go's `strconv.ParseBool`, as KFP reads `cascade`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn decode_object<T: for<'de> Deserialize<'de>>(o: &Object) -> Result<T, KfpError> {
    serde_json::from_slice(&o.data)
        .map_err(|e| KfpError::internal(format!("stored object {} is not readable: {e}", o.key)))
}

/// The last path segment of a URL, without query or fragment (KFP's name fallback).
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn spec_error(errors: &[ir::SpecError]) -> KfpError {
    KfpError::new(
        Code::InvalidArgument,
        "Failed to create a pipeline version",
        format!(
            "pipeline spec is invalid: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    )
}

fn check_name(what: &str, name: &str) -> Result<(), KfpError> {
    let problems = names::dns1123_subdomain(name);
    if problems.is_empty() {
        return Ok(());
    }
    let hint = if what == "pipeline" {
        ". Use 'display_name' for human-readable labels"
    } else {
        ""
    };
    Err(KfpError::invalid(format!(
        "Invalid {what} name {name:?}: {}{hint}",
        problems.join(", ")
    )))
}

impl Call<'_> {
    async fn run(&mut self, op: &KfpOp) -> Result<Response<Body>, KfpError> {
        match op {
            KfpOp::Healthz => ok_json(&serde_json::json!({
                "commit_sha": option_env!("KFP_APISERVER_COMMIT").unwrap_or("unknown"),
                "tag_name": concat!("v", env!("CARGO_PKG_VERSION")),
                "multi_user": self.cfg.multi_user,
                "pipeline_store": "kubernetes",
            })),
            KfpOp::CreatePipeline => self.create_pipeline().await,
            KfpOp::CreatePipelineAndVersion => self.create_pipeline_and_version().await,
            KfpOp::GetPipeline(id) => {
                let (p, _) = self
                    .pipeline_by_id(id, "get", "Failed to get a pipeline")
                    .await?;
                ok_json(&self.rest_pipeline(&p))
            }
            KfpOp::GetPipelineByName(name) => self.get_pipeline_by_name(name).await,
            KfpOp::ListPipelines => self.list_pipelines().await,
            KfpOp::DeletePipeline(id) => self.delete_pipeline(id).await,
            KfpOp::UpdatePipeline(id) => self.update_pipeline(id).await,
            KfpOp::CreatePipelineVersion(id) => self.create_version(id).await,
            KfpOp::ListPipelineVersions(id) => self.list_versions(id).await,
            KfpOp::GetPipelineVersion(_, vid) => {
                let (v, _) = self
                    .version_by_id(vid, "get", "Failed to get a pipeline version")
                    .await?;
                ok_json(&self.rest_version(&v))
            }
            KfpOp::DeletePipelineVersion(_, vid) => self.delete_version(vid).await,
            KfpOp::UpdatePipelineVersion(_, vid) => self.update_version(vid).await,
            KfpOp::UploadPipeline => self.upload_pipeline().await,
            KfpOp::UploadPipelineVersion => self.upload_version().await,
            KfpOp::V1beta1 => Err(KfpError::new(
                Code::Unimplemented,
                "",
                "the v1beta1 API is not served by this server; use /apis/v2beta1",
            )),
            KfpOp::MethodNotAllowed => {
                Err(KfpError::new(Code::Unimplemented, "", "Method Not Allowed"))
            }
            KfpOp::NotFound => Ok(json_response(
                StatusCode::NOT_FOUND,
                r#"{"code":5,"message":"Not Found","details":[]}"#.into(),
            )),
        }
    }

    // === namespaces and authorization ===

    /// The Kubernetes namespace of a KFP namespace.
    fn namespace_for(&self, requested: &str) -> Result<String, KfpError> {
        if !self.cfg.multi_user {
            return Ok(self.cfg.default_namespace.clone());
        }
        if requested.is_empty() || requested == "-" {
            return Ok(self.cfg.shared_namespace.clone());
        }
        let problems = names::dns1123_label(requested);
        if !problems.is_empty() {
            return Err(KfpError::invalid(format!(
                "Invalid namespace {requested:?}: {}",
                problems.join(", ")
            )));
        }
        Ok(requested.to_owned())
    }

    /// The KFP namespace of a stored object: empty in single-user mode and for shared ones.
    fn rest_namespace(&self, ns: &str) -> String {
        if !self.cfg.multi_user || ns == self.cfg.shared_namespace {
            String::new()
        } else {
            ns.to_owned()
        }
    }

    /// Whether an object found by id is visible in this mode (single-user: one namespace).
    fn visible(&self, ns: &str) -> bool {
        self.cfg.multi_user || ns == self.cfg.default_namespace
    }

    async fn authorize(
        &mut self,
        verb: &str,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Result<(), KfpError> {
        self.namespace = ns.to_owned();
        // Shared pipelines are readable by every authenticated user (KFP's multi-user mode).
        if self.cfg.multi_user && ns == self.cfg.shared_namespace && matches!(verb, "get" | "list")
        {
            return Ok(());
        }
        let attrs = Attributes {
            user: self.user.clone(),
            verb: verb.to_owned(),
            resource_request: true,
            api_group: GROUP.to_owned(),
            resource: resource.to_owned(),
            subresource: String::new(),
            namespace: ns.to_owned(),
            name: name.to_owned(),
            path: self.path.clone(),
        };
        match self.app.authz.authorize(&attrs).await {
            Decision::Allow => Ok(()),
            Decision::Deny(why) => Err(KfpError::forbidden(
                &self.user.name,
                &attrs.forbidden_message(&why),
            )),
        }
    }

    // === bodies ===

    async fn read_body(&mut self, limit: usize) -> Result<Bytes, KfpError> {
        let taken = self.body.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(body) = taken else {
            return Ok(Bytes::new());
        };
        crate::layers::read_limited(body, limit)
            .await
            .map_err(|e| KfpError::invalid(format!("reading the request body failed: {e}")))
    }

    async fn json_body<T: for<'de> Deserialize<'de> + Default>(&mut self) -> Result<T, KfpError> {
        let bytes = self.read_body(MAX_BODY_BYTES).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| KfpError::invalid(format!("invalid request body: {e}")))
    }

    fn param(&self, name: &str) -> &str {
        self.query.get(name).unwrap_or_default()
    }

    fn tags_param(&self) -> Result<Option<BTreeMap<String, String>>, KfpError> {
        match self.param("tags") {
            "" => Ok(None),
            raw => serde_json::from_str(raw)
                .map(Some)
                .map_err(|e| KfpError::invalid(format!("invalid tags {raw:?}: {e}"))),
        }
    }

    // === conversions ===

    fn rest_pipeline(&self, p: &Pipeline) -> RestPipeline {
        let mut r = pipeline_to_rest(p);
        r.namespace = self.rest_namespace(&r.namespace);
        r
    }

    fn rest_version(&self, v: &PipelineVersion) -> RestPipelineVersion {
        version_to_rest(v, true)
    }

    // === lookups ===

    /// An object of `res` by uid (visible in this mode), authorized for `verb` on its
    /// namespace and name; 404 in KFP's words (`Pipeline <id> not found`) otherwise.
    async fn object_by_id<T: for<'de> Deserialize<'de>>(
        &mut self,
        res: &'static Resource,
        id: &str,
        verb: &str,
        context: &str,
    ) -> Result<(T, Object), KfpError> {
        let o = match self.app.store.get_by_uid(res.plural, id).await {
            Ok(o) if self.visible(&o.key.namespace) => o,
            Ok(_) | Err(StoreError::NotFound(_)) => {
                return Err(KfpError::not_found(
                    &format!("{context} {id}. Check error stack"),
                    format!("{} {id} not found", res.kind),
                ));
            }
            Err(e) => {
                return Err(KfpError::from_registry(
                    RegistryError::store(e, res.plural, id),
                    context,
                ));
            }
        };
        self.authorize(verb, res.plural, &o.key.namespace, &o.key.name)
            .await?;
        Ok((decode_object(&o)?, o))
    }

    /// A pipeline by uid, authorized for `verb`.
    async fn pipeline_by_id(
        &mut self,
        id: &str,
        verb: &str,
        context: &str,
    ) -> Result<(Pipeline, Object), KfpError> {
        self.object_by_id(pipelines(), id, verb, context).await
    }

    /// A version by uid, authorized for `verb`.
    async fn version_by_id(
        &mut self,
        id: &str,
        verb: &str,
        context: &str,
    ) -> Result<(PipelineVersion, Object), KfpError> {
        self.object_by_id(versions(), id, verb, context).await
    }

    fn opts() -> WriteOptions {
        WriteOptions {
            dry_run: false,
            manager: FIELD_MANAGER.into(),
            field_validation: FieldValidation::Strict,
            force: false,
        }
    }

    // === pipelines ===

    async fn create_pipeline(&mut self) -> Result<Response<Body>, KfpError> {
        let r: RestPipeline = self.json_body().await?;
        let ns = self.namespace_for(&r.namespace)?;
        let p = pipeline_from_rest(&r, &ns);
        let name = p.metadata.name.clone().unwrap_or_default();
        self.authorize("create", Pipeline::PLURAL, &ns, &name)
            .await?;
        if name.is_empty() {
            return Err(KfpError::invalid("name is required"));
        }
        check_name("pipeline", &name)?;
        let body = serde_json::to_value(&p).map_err(|e| KfpError::internal(e.to_string()))?;
        let written = self
            .app
            .registry
            .create(pipelines(), &ns, body, &Self::opts())
            .await
            .map_err(|e| pipeline_write_error(e, &name))?;
        let stored: Pipeline = serde_json::from_slice(&written.object)
            .map_err(|e| KfpError::internal(e.to_string()))?;
        ok_json(&self.rest_pipeline(&stored))
    }

    async fn get_pipeline_by_name(&mut self, name: &str) -> Result<Response<Body>, KfpError> {
        let ns = self.namespace_for(self.param("namespace"))?;
        self.authorize("get", Pipeline::PLURAL, &ns, name).await?;
        match self.app.registry.get(pipelines(), &ns, name).await {
            Ok(o) => ok_json(&self.rest_pipeline(&decode_object(&o)?)),
            Err(RegistryError::NotFound { .. }) => Err(KfpError::not_found(
                &format!("Failed to get a pipeline with name {name}"),
                format!(
                    "Namespace/Pipeline {}/{name} not found",
                    self.rest_namespace(&ns)
                ),
            )),
            Err(e) => Err(KfpError::from_registry(e, "Failed to get a pipeline")),
        }
    }

    /// The page parameters and the query they make.
    fn page(
        &self,
        listing: Listing,
        resource: &str,
        namespace: &str,
        scope: &str,
    ) -> Result<(QueryRequest, Sort, Filter), KfpError> {
        let sort_raw = self.param("sort_by");
        let filter_raw = self.param("filter");
        let token = match self.param("page_token") {
            "" => None,
            t => Some(PageToken::decode(t)?),
        };
        let mut sort = list::parse_sort(sort_raw, listing)?;
        let filter = match filter_raw {
            "" => Filter::default(),
            raw => list::parse_filter(raw, listing)?,
        };
        let mut after = None;
        if let Some(t) = &token {
            let mismatch = t.scope != scope
                || (!sort_raw.is_empty() && t.sort != sort)
                || (!filter_raw.is_empty() && t.filter != filter.canonical);
            if mismatch {
                return Err(KfpError::invalid(
                    "page token does not match the supplied sort by and/or filtering criteria. \
                     Either specify the same criteria or leave the latter empty if page token is specified",
                ));
            }
            sort = t.sort.clone();
            after = Some(t.cursor()?);
        }
        let filter = match &token {
            // The token's filter is authoritative; an empty `filter` means "the token's".
            Some(t)
                if filter_raw.is_empty()
                    && !t.filter.is_empty()
                    && t.filter != filter.canonical =>
            {
                return Err(KfpError::invalid(
                    "a page token of a filtered list needs its filter: send the same filter again",
                ));
            }
            _ => filter,
        };
        let limit = list::parse_page_size(Some(self.param("page_size")))?;
        Ok((
            QueryRequest {
                resource: resource.to_owned(),
                namespace: Some(namespace.to_owned()),
                predicates: filter.predicates.clone(),
                terms: filter.terms.clone(),
                sort: sort.column(listing)?,
                descending: sort.desc,
                after,
                limit,
            },
            sort,
            filter,
        ))
    }

    async fn list_pipelines(&mut self) -> Result<Response<Body>, KfpError> {
        let ns = self.namespace_for(self.param("namespace"))?;
        self.authorize("list", Pipeline::PLURAL, &ns, "").await?;
        let scope = format!("Pipeline/{ns}");
        let (q, sort, filter) = self.page(Listing::Pipelines, Pipeline::PLURAL, &ns, &scope)?;
        let page = self
            .app
            .store
            .query(&q)
            .await
            .map_err(|e| store_error(e, "Failed to list pipelines"))?;
        let items = page
            .items
            .iter()
            .map(|o| decode_object::<Pipeline>(o).map(|p| self.rest_pipeline(&p)))
            .collect::<Result<_, _>>()?;
        ok_json(&PipelineList {
            pipelines: items,
            total_size: page.total,
            next_page_token: page
                .next
                .map(|c| PageToken::new(&scope, &sort, &filter, &c).encode())
                .unwrap_or_default(),
        })
    }

    async fn versions_of(
        &self,
        ns: &str,
        uid: &str,
        limit: usize,
    ) -> Result<Vec<Object>, KfpError> {
        let q = QueryRequest {
            resource: PipelineVersion::PLURAL.into(),
            namespace: Some(ns.to_owned()),
            predicates: vec![of_parent(uid)],
            terms: Vec::new(),
            sort: Column::CreatedAt,
            descending: false,
            after: None,
            limit,
        };
        Ok(self
            .app
            .store
            .query(&q)
            .await
            .map_err(|e| store_error(e, "Failed to list pipeline versions"))?
            .items)
    }

    async fn delete_pipeline(&mut self, id: &str) -> Result<Response<Body>, KfpError> {
        let cascade = match self.param("cascade") {
            "" => false,
            raw => go_bool(raw).ok_or_else(|| {
                KfpError::invalid(format!("invalid value {raw:?} for cascade: not a boolean"))
            })?,
        };
        let (_, o) = self
            .pipeline_by_id(id, "delete", "Failed to delete a pipeline")
            .await?;
        if !cascade && let Some(v) = self.versions_of(&o.key.namespace, &o.uid, 1).await?.first() {
            return Err(KfpError::new(
                Code::InvalidArgument,
                &format!("Failed to delete pipeline {id}"),
                format!(
                    "Failed to delete pipeline with id {id} as it has existing pipeline versions \
                     (e.g. {}). Set cascade=true to delete all versions",
                    v.uid
                ),
            ));
        }
        let opts = DeleteOptions {
            preconditions: Preconditions {
                uid: Some(o.uid.clone()),
                resource_version: None,
            },
            propagation: Propagation::Background,
            dry_run: false,
        };
        self.app
            .registry
            .delete(pipelines(), &o.key.namespace, &o.key.name, &opts)
            .await
            .map_err(|e| match e {
                RegistryError::NotFound { .. } | RegistryError::Conflict { .. } => {
                    KfpError::not_found(
                        "Failed to delete a pipeline",
                        format!("Pipeline {id} not found"),
                    )
                }
                e => KfpError::from_registry(e, "Failed to delete a pipeline"),
            })?;
        ok_json(&serde_json::json!({}))
    }

    /// Applies KFP's update rules (`display_name` when non-empty; `tags` replaced when present,
    /// cleared by `{}`) as a merge patch with the object's resourceVersion as precondition.
    async fn patch_meta(
        &self,
        res: &'static Resource,
        o: &Object,
        display_name: &str,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Result<Bytes, RegistryError> {
        let mut current = o.clone();
        for _ in 0..8 {
            let live: Value = serde_json::from_slice(&current.data).unwrap_or_default();
            let mut spec = serde_json::Map::new();
            if !display_name.is_empty() {
                spec.insert("displayName".into(), Value::String(display_name.to_owned()));
            }
            if let Some(tags) = tags {
                let mut m = serde_json::Map::new();
                if let Some(old) = live.pointer("/spec/tags").and_then(Value::as_object) {
                    for k in old.keys() {
                        m.insert(k.clone(), Value::Null);
                    }
                }
                for (k, v) in tags {
                    m.insert(k.clone(), Value::String(v.clone()));
                }
                spec.insert(
                    "tags".into(),
                    if tags.is_empty() {
                        Value::Null
                    } else {
                        Value::Object(m)
                    },
                );
            }
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": current.revision.to_string(), "uid": current.uid},
                "spec": spec,
            });
            match self
                .app
                .registry
                .patch(
                    res,
                    &current.key.namespace,
                    &current.key.name,
                    &Patch::Merge(patch),
                    &Self::opts(),
                    false,
                )
                .await
            {
                Ok(w) => return Ok(w.object),
                Err(RegistryError::Conflict { .. }) => {
                    current = self
                        .app
                        .registry
                        .get(res, &current.key.namespace, &current.key.name)
                        .await?;
                    if current.uid != o.uid {
                        return Err(RegistryError::NotFound {
                            resource: res.plural,
                            name: o.key.name.clone(),
                        });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Conflict {
            resource: res.plural,
            name: o.key.name.clone(),
            message: "too many concurrent writers; try again".into(),
        })
    }

    async fn update_pipeline(&mut self, id: &str) -> Result<Response<Body>, KfpError> {
        let r: RestPipeline = self.json_body().await?;
        let (_, o) = self
            .pipeline_by_id(id, "update", "Failed to update a pipeline")
            .await?;
        let stored = self
            .patch_meta(pipelines(), &o, &r.display_name, r.tags.as_ref())
            .await
            .map_err(|e| KfpError::from_registry(e, "Failed to update a pipeline"))?;
        let p: Pipeline =
            serde_json::from_slice(&stored).map_err(|e| KfpError::internal(e.to_string()))?;
        ok_json(&self.rest_pipeline(&p))
    }

    // === versions ===

    async fn list_versions(&mut self, pipeline_id: &str) -> Result<Response<Body>, KfpError> {
        let (_, parent) = self
            .pipeline_by_id(pipeline_id, "get", "Failed to list pipeline versions")
            .await?;
        let ns = parent.key.namespace.clone();
        self.authorize("list", PipelineVersion::PLURAL, &ns, "")
            .await?;
        let scope = format!("PipelineVersion/{}", parent.uid);
        let (mut q, sort, filter) =
            self.page(Listing::Versions, PipelineVersion::PLURAL, &ns, &scope)?;
        q.predicates.push(of_parent(&parent.uid));
        let page = self
            .app
            .store
            .query(&q)
            .await
            .map_err(|e| store_error(e, "Failed to list pipeline versions"))?;
        let items = page
            .items
            .iter()
            .map(|o| decode_object::<PipelineVersion>(o).map(|v| self.rest_version(&v)))
            .collect::<Result<_, _>>()?;
        ok_json(&VersionList {
            pipeline_versions: items,
            next_page_token: page
                .next
                .map(|c| PageToken::new(&scope, &sort, &filter, &c).encode())
                .unwrap_or_default(),
            total_size: page.total,
        })
    }

    async fn delete_version(&mut self, vid: &str) -> Result<Response<Body>, KfpError> {
        let (_, o) = self
            .version_by_id(vid, "delete", "Failed to delete a pipeline version")
            .await?;
        let opts = DeleteOptions {
            preconditions: Preconditions {
                uid: Some(o.uid.clone()),
                resource_version: None,
            },
            ..Default::default()
        };
        self.app
            .registry
            .delete(versions(), &o.key.namespace, &o.key.name, &opts)
            .await
            .map_err(|e| match e {
                RegistryError::NotFound { .. } | RegistryError::Conflict { .. } => {
                    KfpError::not_found(
                        "Failed to delete a pipeline version",
                        format!("PipelineVersion {vid} not found"),
                    )
                }
                e => KfpError::from_registry(e, "Failed to delete a pipeline version"),
            })?;
        ok_json(&serde_json::json!({}))
    }

    async fn update_version(&mut self, vid: &str) -> Result<Response<Body>, KfpError> {
        let r: RestPipelineVersion = self.json_body().await?;
        let (_, o) = self
            .version_by_id(vid, "update", "Failed to update a pipeline version")
            .await?;
        let stored = self
            .patch_meta(versions(), &o, &r.display_name, r.tags.as_ref())
            .await
            .map_err(|e| KfpError::from_registry(e, "Failed to update a pipeline version"))?;
        let v: PipelineVersion =
            serde_json::from_slice(&stored).map_err(|e| KfpError::internal(e.to_string()))?;
        ok_json(&self.rest_version(&v))
    }

    /// Checks a new version's name under `parent` (DNS name, composite name, unique logical
    /// name) and builds its object.
    fn new_version(
        &self,
        r: &RestPipelineVersion,
        parent: &Pipeline,
        spec: ir::ParsedPipeline,
    ) -> Result<Value, KfpError> {
        let v = version_from_rest(r, parent, spec.pipeline_spec, spec.platform_spec);
        let version_name = v.spec.version_name.clone().unwrap_or_default();
        if version_name.is_empty() {
            return Err(KfpError::invalid("pipeline version name is required"));
        }
        check_name("pipeline version", &version_name)?;
        let object_name = v.metadata.name.clone().unwrap_or_default();
        if object_name.len() > 253 || !names::dns1123_subdomain(&object_name).is_empty() {
            return Err(KfpError::invalid(format!(
                "The combined pipeline and version name {object_name:?} exceeds the Kubernetes \
                 253-character naming limit or is not a valid object name"
            )));
        }
        serde_json::to_value(&v).map_err(|e| KfpError::internal(e.to_string()))
    }

    /// Whether `parent` already has a version of this logical name (a GitOps object named
    /// differently from KFP's composite name counts too).
    async fn version_name_taken(
        &self,
        parent: &Object,
        version_name: &str,
    ) -> Result<bool, KfpError> {
        let q = QueryRequest {
            resource: PipelineVersion::PLURAL.into(),
            namespace: Some(parent.key.namespace.clone()),
            predicates: vec![
                of_parent(&parent.uid),
                Predicate {
                    column: Column::Indexed(IndexColumn::Alias),
                    op: Op::Eq(QValue::Text(version_name.to_owned())),
                },
            ],
            terms: Vec::new(),
            sort: Column::Uid,
            descending: false,
            after: None,
            limit: 1,
        };
        Ok(self
            .app
            .store
            .query(&q)
            .await
            .map_err(|e| store_error(e, "Failed to create a pipeline version"))?
            .total
            > 0)
    }

    async fn create_version_under(
        &self,
        parent_obj: &Object,
        parent: &Pipeline,
        r: &RestPipelineVersion,
        spec: ir::ParsedPipeline,
    ) -> Result<Response<Body>, KfpError> {
        let body = self.new_version(r, parent, spec)?;
        let version_name = body
            .pointer("/spec/versionName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let duplicate = || {
            KfpError::new(
                Code::AlreadyExists,
                "Failed to create a pipeline version",
                format!(
                    "Failed to create a new pipeline version. The name {version_name} already exist. Specify a new name"
                ),
            )
        };
        if self.version_name_taken(parent_obj, &version_name).await? {
            return Err(duplicate());
        }
        let written = self
            .app
            .registry
            .create(versions(), &parent_obj.key.namespace, body, &Self::opts())
            .await
            .map_err(|e| match e {
                RegistryError::AlreadyExists { name, .. } => KfpError::new(
                    Code::AlreadyExists,
                    "Failed to create a pipeline version",
                    format!(
                        "Failed to create a new pipeline version. The name {version_name} already exist (resource name: {name}). Specify a new name"
                    ),
                ),
                e => KfpError::from_registry(e, "Failed to create a pipeline version"),
            })?;
        let v: PipelineVersion = serde_json::from_slice(&written.object)
            .map_err(|e| KfpError::internal(e.to_string()))?;
        ok_json(&self.rest_version(&v))
    }

    async fn create_version(&mut self, pipeline_id: &str) -> Result<Response<Body>, KfpError> {
        let mut r: RestPipelineVersion = self.json_body().await?;
        let url = r
            .package_url
            .as_ref()
            .map(|p| p.pipeline_url.clone())
            .unwrap_or_default();
        if r.package_url.is_none() {
            return Err(KfpError::invalid(
                "Failed to create a pipeline version: package_url is required",
            ));
        }
        if url.is_empty() {
            return Err(KfpError::invalid(
                "Failed to create a pipeline version: package_url.pipeline_url is empty",
            ));
        }
        if r.pipeline_id.is_empty() {
            return Err(KfpError::invalid("Parent pipeline id is empty"));
        }
        let (parent, parent_obj) = self
            .pipeline_by_id(pipeline_id, "get", "Failed to create a pipeline version")
            .await?;
        if r.name.is_empty() && r.display_name.is_empty() {
            r.name = url_file_name(&url);
        }
        let version_name = if r.name.is_empty() {
            &r.display_name
        } else {
            &r.name
        };
        let object_name = version_object_name(&parent_obj.key.name, version_name);
        self.authorize(
            "create",
            PipelineVersion::PLURAL,
            &parent_obj.key.namespace,
            &object_name,
        )
        .await?;
        let bytes = fetch::download(&url, &self.cfg.url_policy).await?;
        let spec = ir::parse_pipeline_file(&bytes).map_err(|e| spec_error(&e))?;
        self.create_version_under(&parent_obj, &parent, &r, spec)
            .await
    }

    async fn create_pipeline_and_version(&mut self) -> Result<Response<Body>, KfpError> {
        let req: CreateBoth = self.json_body().await?;
        let (Some(mut rp), Some(rv)) = (req.pipeline, req.pipeline_version) else {
            return Err(KfpError::invalid(
                "Failed to create a pipeline and a pipeline version: pipeline and pipeline_version are required",
            ));
        };
        let url = rv
            .package_url
            .as_ref()
            .map(|p| p.pipeline_url.clone())
            .unwrap_or_default();
        if url.is_empty() {
            return Err(KfpError::invalid(
                "Failed to create a pipeline and a pipeline version: pipeline_version.package_url.pipeline_url is required",
            ));
        }
        if rp.name.is_empty() && rp.display_name.is_empty() {
            rp.name = url_file_name(&url);
        }
        let ns = self.namespace_for(&rp.namespace)?;
        let p = pipeline_from_rest(&rp, &ns);
        let name = p.metadata.name.clone().unwrap_or_default();
        self.authorize("create", Pipeline::PLURAL, &ns, &name)
            .await?;
        self.authorize("create", PipelineVersion::PLURAL, &ns, &name)
            .await?;
        check_name("pipeline", &name)?;
        let bytes = fetch::download(&url, &self.cfg.url_policy).await?;
        let spec = ir::parse_pipeline_file(&bytes).map_err(|e| spec_error(&e))?;
        // The version copies the pipeline's name, display name and description; of the
        // request's version only package_url, code_source_url and tags count (as KFP).
        let version = RestPipelineVersion {
            name: name.clone(),
            display_name: p.spec.display_name.clone().unwrap_or_default(),
            description: rp.description.clone(),
            package_url: rv.package_url.clone(),
            code_source_url: rv.code_source_url.clone(),
            tags: rv.tags.clone(),
            ..Default::default()
        };
        let pipeline = self.create_both(p, &version, spec).await?;
        ok_json(&self.rest_pipeline(&pipeline))
    }

    /// Creates a Pipeline and its first version in one transaction.
    async fn create_both(
        &self,
        p: Pipeline,
        version: &RestPipelineVersion,
        spec: ir::ParsedPipeline,
    ) -> Result<Pipeline, KfpError> {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let version_body = self.new_version(version, &p, spec)?;
        let body = serde_json::to_value(&p).map_err(|e| KfpError::internal(e.to_string()))?;
        let (written, _) = self
            .app
            .registry
            .create_with_dependent(
                pipelines(),
                &ns,
                body,
                versions(),
                version_body,
                &Self::opts(),
            )
            .await
            .map_err(|e| pipeline_write_error(e, &name))?;
        serde_json::from_slice(&written.object).map_err(|e| KfpError::internal(e.to_string()))
    }

    // === uploads ===

    /// Reads and validates the uploaded file; returns it and the part's file name.
    async fn upload_body(&mut self) -> Result<(ir::ParsedPipeline, String), KfpError> {
        let bytes = self
            .read_body(upload::MAX_FILE_BYTES + upload::MAX_ENVELOPE_BYTES)
            .await?;
        let file = upload::read_part(self.content_type.as_deref(), bytes).await?;
        // Unpacking and parsing up to 32 MiB is CPU work: off the async workers.
        let parsed = tokio::task::spawn_blocking(move || {
            let doc = upload::pipeline_bytes(&file)?;
            ir::parse_pipeline_file(&doc)
                .map(|p| (p, file.file_name))
                .map_err(|e| spec_error(&e))
        })
        .await
        .map_err(|e| KfpError::internal(e.to_string()))??;
        Ok(parsed)
    }

    async fn upload_pipeline(&mut self) -> Result<Response<Body>, KfpError> {
        let ns = self.namespace_for(self.param("namespace"))?;
        let tags = self.tags_param()?;
        let mut rp = RestPipeline {
            name: self.param("name").to_owned(),
            display_name: self.param("display_name").to_owned(),
            description: self.param("description").to_owned(),
            namespace: ns.clone(),
            tags: tags.clone(),
            ..Default::default()
        };
        // Authorized before the (up to 32 MiB) body is read; the name is not known yet when it
        // falls back to the file name.
        self.authorize("create", Pipeline::PLURAL, &ns, &rp.name)
            .await?;
        self.authorize("create", PipelineVersion::PLURAL, &ns, &rp.name)
            .await?;
        let (spec, file_name) = self.upload_body().await?;
        if rp.name.is_empty() && rp.display_name.is_empty() {
            rp.name = file_name;
        }
        let p = pipeline_from_rest(&rp, &ns);
        let name = p.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(KfpError::invalid("name is required"));
        }
        check_name("pipeline", &name)?;
        let version = RestPipelineVersion {
            name: name.clone(),
            display_name: p.spec.display_name.clone().unwrap_or_default(),
            description: rp.description.clone(),
            code_source_url: self.param("code_source_url").to_owned(),
            tags,
            ..Default::default()
        };
        let pipeline = self.create_both(p, &version, spec).await?;
        ok_json(&self.rest_pipeline(&pipeline))
    }

    async fn upload_version(&mut self) -> Result<Response<Body>, KfpError> {
        let pipeline_id = self.param("pipelineid").to_owned();
        if pipeline_id.is_empty() {
            return Err(KfpError::invalid(
                "Failed to create a pipeline version: the pipelineid query parameter is required",
            ));
        }
        let tags = self.tags_param()?;
        let (parent, parent_obj) = self
            .pipeline_by_id(&pipeline_id, "get", "Failed to create a pipeline version")
            .await
            .map_err(|mut e| {
                // The upload handler answers an unknown parent with 400, as KFP's.
                if e.code == Code::NotFound {
                    e.code = Code::InvalidArgument;
                }
                e
            })?;
        let name = self.param("name").to_owned();
        self.authorize(
            "create",
            PipelineVersion::PLURAL,
            &parent_obj.key.namespace,
            &version_object_name(&parent_obj.key.name, &name),
        )
        .await?;
        let (spec, file_name) = self.upload_body().await?;
        let mut r = RestPipelineVersion {
            pipeline_id,
            name,
            display_name: self.param("display_name").to_owned(),
            description: self.param("description").to_owned(),
            code_source_url: self.param("code_source_url").to_owned(),
            tags,
            ..Default::default()
        };
        if r.name.is_empty() && r.display_name.is_empty() {
            r.name = file_name;
        }
        self.create_version_under(&parent_obj, &parent, &r, spec)
            .await
    }
}

/// Versions whose parent (owner reference, else label) is the pipeline `uid`.
fn of_parent(uid: &str) -> Predicate {
    Predicate {
        column: Column::Indexed(IndexColumn::ParentUid),
        op: Op::Eq(QValue::Text(uid.to_owned())),
    }
}

fn store_error(e: StoreError, context: &str) -> KfpError {
    KfpError::from_registry(RegistryError::store(e, "", ""), context)
}

fn pipeline_write_error(e: RegistryError, name: &str) -> KfpError {
    match e {
        RegistryError::AlreadyExists { resource, .. } if resource == Pipeline::PLURAL => {
            KfpError::new(
                Code::AlreadyExists,
                "Failed to create a new pipeline",
                format!(
                    "Failed to create a new pipeline. The name {name} already exist. Please specify a new name"
                ),
            )
        }
        RegistryError::AlreadyExists { name: object, .. } => KfpError::new(
            Code::AlreadyExists,
            "Failed to create a pipeline version",
            format!(
                "Failed to create a new pipeline version. The name {name} already exist (resource name: {object}). Specify a new name"
            ),
        ),
        e => KfpError::from_registry(e, "Failed to create a pipeline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bools_and_url_names() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(go_bool(f), Some(false), "{f}");
        }
        assert_eq!(go_bool("yes"), None);
        assert_eq!(
            url_file_name("https://h/a/b/hello.yaml?x=1#f"),
            "hello.yaml"
        );
        assert_eq!(url_file_name("https://h/a/dir/"), "dir");
    }

    #[test]
    fn pipeline_names_get_kfps_words() {
        let e = check_name("pipeline", "My Pipeline").unwrap_err();
        assert!(
            e.user.starts_with("Invalid pipeline name \"My Pipeline\""),
            "{}",
            e.user
        );
        assert!(
            e.user
                .ends_with("Use 'display_name' for human-readable labels")
        );
        assert!(check_name("pipeline", "hello-world.v1").is_ok());
    }
}
