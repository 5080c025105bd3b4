//! The Kubernetes routes: decode the request (options with kube-apiserver's rules, bodies into
//! values, `DeleteOptions` into the k8s-openapi type), call the [`Registry`], encode the answer
//! (JSON, Table, PartialObjectMetadata). No write semantics live here: read-modify-write,
//! finalizers, dependents, field management and dry run are the registry's.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kfp_apiservice::decode::FieldValidation;
use kfp_apiservice::resource::Resource;
use kfp_storage::{ListRequest, Preconditions, Revision, StoreError};
use serde_json::Value;

use super::output::{self, Output};
use super::params::{ListOptions, WriteOptions};
use crate::app::{App, Req};
use crate::body::Body;
use crate::error::ApiError;
use crate::registry::{self, DeleteOptions, Patch, Propagation, RegistryError};
use crate::request_info::ResourceRequest;

fn json_response(status: StatusCode, body: Bytes, warnings: &[String]) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        // RFC 7234 warn-text is a quoted string: escape what would end it.
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn reg(e: RegistryError) -> ApiError {
    ApiError::from_registry(e)
}

/// Routes a resource request.
pub async fn handle(app: &App, rr: &ResourceRequest, req: Req) -> Result<Response<Body>, ApiError> {
    let Some(res) = Resource::by_plural(&rr.resource) else {
        return Err(ApiError::path_not_found());
    };
    match rr.subresource.as_deref() {
        None => {}
        Some("status") if res.status_subresource && rr.name.is_some() => {}
        Some(_) => return Err(ApiError::path_not_found()),
    }
    let status = rr.subresource.is_some();
    let named = rr.name.is_some();
    // kube-apiserver registers only list and watch on the all-namespaces path of a namespaced
    // resource: everything else there is 405.
    if rr.namespace.is_none() && !matches!(rr.verb, "list" | "watch") {
        return Err(ApiError::method_not_allowed(
            rr.verb,
            &format!("{} in all namespaces", rr.resource),
        ));
    }
    match rr.verb {
        "get" => get(app, res, rr, &req).await,
        "list" => list(app, res, rr, &req).await,
        "watch" if !status => super::watch::watch(app, res, rr, &req).await,
        "create" if !named && !status => create(app, res, rr, req).await,
        "update" if named => update(app, res, rr, req, status).await,
        "patch" if named => patch(app, res, rr, req, status).await,
        "delete" if named && !status => delete(app, res, rr, req).await,
        "deletecollection" if !status => delete_collection(app, res, rr, req).await,
        verb => Err(ApiError::method_not_allowed(verb, &rr.resource)),
    }
}

fn namespace(rr: &ResourceRequest) -> &str {
    rr.namespace.as_deref().unwrap_or_default()
}

fn name(rr: &ResourceRequest) -> &str {
    rr.name.as_deref().unwrap_or_default()
}

fn accept(req: &Req) -> Result<Output, ApiError> {
    output::negotiate(
        req.header(header::ACCEPT.as_str()),
        req.query.get("includeObject"),
    )
}

async fn get(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    let out = accept(req)?;
    let at = super::params::get_resource_version(&req.query)?;
    let o = app
        .registry
        .get(res, namespace(rr), name(rr))
        .await
        .map_err(reg)?;
    if let kfp_storage::ReadAt::NotOlderThan(want) = at
        && want > o.revision
    {
        // The object's revision is at most the store's; only a newer store can say more.
        let current = app
            .store
            .current_revision()
            .await
            .map_err(|e| ApiError::from_store(e, res.plural, name(rr)))?;
        if want > current {
            return Err(ApiError::too_large_resource_version(want.0, current.0));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        output::object(res, &o.data, out)?,
        &[],
    ))
}

/// The store request a list (or watch initial state) makes.
pub fn list_request(
    res: &'static Resource,
    rr: &ResourceRequest,
    opts: &ListOptions,
) -> ListRequest {
    ListRequest {
        resource: res.plural.to_owned(),
        namespace: rr.namespace.clone(),
        labels: opts.labels.clone(),
        fields: opts.fields.clone(),
        limit: opts.limit,
        continue_token: opts.continue_token.clone(),
        at: opts.at,
    }
}

async fn list(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    let opts = ListOptions::parse(&req.query, res, false)?;
    let out = accept(req)?;
    let page = app
        .registry
        .list(res, &list_request(res, rr, &opts))
        .await
        .map_err(|e| match e {
            RegistryError::Store { source, .. } if opts.continue_token.is_some() => match *source {
                StoreError::Gone { requested, compacted } => {
                    let mut err = ApiError::gone(format!(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list. (too old resource version: {} ({}))",
                        requested.0, compacted.0
                    ));
                    err.reason = "Expired";
                    err
                }
                other => ApiError::from_store(other, res.plural, ""),
            },
            e => reg(e),
        })?;
    Ok(json_response(
        StatusCode::OK,
        output::list(res, &page, out)?,
        &[],
    ))
}

fn media_type(req: &Req) -> String {
    req.header(header::CONTENT_TYPE.as_str())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Reads a request body as JSON (also accepting YAML for `application/yaml`).
/// A decoded body and its duplicate keys (`duplicate field "a.b"`, the last value kept).
struct DecodedBody {
    value: Value,
    duplicates: Vec<String>,
}

impl DecodedBody {
    /// Applies `fieldValidation` to the duplicates as kube-apiserver does: Strict refuses
    /// (400), Warn returns them as warnings, Ignore drops them.
    fn judged(self, fv: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        match fv {
            FieldValidation::Strict if !self.duplicates.is_empty() => Err(ApiError::bad_request(
                format!("strict decoding error: {}", self.duplicates.join(", ")),
            )),
            FieldValidation::Warn => Ok((self.value, self.duplicates)),
            _ => Ok((self.value, Vec::new())),
        }
    }
}

async fn body_json(req: &Req) -> Result<DecodedBody, ApiError> {
    match media_type(req).as_str() {
        "application/json" | "" | "*/*" => {
            kfp_apiservice::yaml::json_reporting_duplicates(&req.body)
                .map(|(value, duplicates)| DecodedBody { value, duplicates })
                .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => yaml_one(&req.body).await,
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other})"
        ))),
    }
}

/// YAML bodies above this are parsed on the blocking pool: the parser is linear but slow
/// (about a second per MiB), and a request worker must not stall `/healthz` meanwhile.
const INLINE_YAML_BYTES: usize = 64 << 10;

async fn yaml_one(body: &bytes::Bytes) -> Result<DecodedBody, ApiError> {
    let parsed = if body.len() <= INLINE_YAML_BYTES {
        kfp_apiservice::yaml::read_documents_reporting_duplicates(body)
    } else {
        let body = body.clone();
        tokio::task::spawn_blocking(move || {
            kfp_apiservice::yaml::read_documents_reporting_duplicates(&body)
        })
        .await
        .map_err(|e| ApiError::internal(format!("parsing the YAML body failed: {e}")))?
    };
    let (docs, duplicates) =
        parsed.map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let mut docs = docs.into_iter();
    match (docs.next(), docs.next()) {
        (Some(d), None) => Ok(DecodedBody {
            value: d.value,
            duplicates,
        }),
        (None, _) => Err(ApiError::bad_request("the request body is empty")),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "the request body holds more than one YAML document",
        )),
    }
}

fn write_options(req: &Req, opts: WriteOptions) -> registry::WriteOptions {
    let manager = opts
        .field_manager
        .unwrap_or_else(|| super::params::default_manager(req.header(header::USER_AGENT.as_str())));
    registry::WriteOptions {
        dry_run: opts.dry_run,
        manager,
        field_validation: opts.field_validation,
        force: opts.force,
    }
}

async fn create(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    req: Req,
) -> Result<Response<Body>, ApiError> {
    let opts = write_options(
        &req,
        WriteOptions::parse(&req.query, "CreateOptions", false)?,
    );
    let (body, mut warnings) = body_json(&req).await?.judged(opts.field_validation)?;
    let w = app
        .registry
        .create(res, namespace(rr), body, &opts)
        .await
        .map_err(reg)?;
    warnings.extend(w.warnings);
    Ok(json_response(StatusCode::CREATED, w.object, &warnings))
}

async fn update(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    req: Req,
    status: bool,
) -> Result<Response<Body>, ApiError> {
    let opts = write_options(
        &req,
        WriteOptions::parse(&req.query, "UpdateOptions", false)?,
    );
    let (body, mut warnings) = body_json(&req).await?.judged(opts.field_validation)?;
    let w = app
        .registry
        .update(res, namespace(rr), name(rr), body, &opts, status)
        .await
        .map_err(reg)?;
    warnings.extend(w.warnings);
    Ok(json_response(StatusCode::OK, w.object, &warnings))
}

/// The patch and the warnings its duplicate keys give under `fv` (merge and apply patches are
/// objects; a JSON patch is a list of operations).
async fn parse_patch(req: &Req, fv: FieldValidation) -> Result<(Patch, Vec<String>), ApiError> {
    match media_type(req).as_str() {
        "application/json-patch+json" => serde_json::from_slice(&req.body)
            .map(|p| (Patch::Json(p), Vec::new()))
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}"))),
        "application/merge-patch+json" => {
            let (value, duplicates) = kfp_apiservice::yaml::json_reporting_duplicates(&req.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding merge patch: {e}")))?;
            let (value, warnings) = DecodedBody { value, duplicates }.judged(fv)?;
            Ok((Patch::Merge(value), warnings))
        }
        "application/apply-patch+yaml" => {
            let (value, warnings) = yaml_one(&req.body).await?.judged(fv)?;
            Ok((Patch::Apply(value), warnings))
        }
        media => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {media})"
        ))),
    }
}

async fn patch(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    req: Req,
    status: bool,
) -> Result<Response<Body>, ApiError> {
    let is_apply = media_type(&req) == "application/apply-patch+yaml";
    let opts = write_options(
        &req,
        WriteOptions::parse(&req.query, "PatchOptions", is_apply)?,
    );
    let (patch, mut warnings) = parse_patch(&req, opts.field_validation).await?;
    let w = app
        .registry
        .patch(res, namespace(rr), name(rr), &patch, &opts, status)
        .await
        .map_err(reg)?;
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    warnings.extend(w.warnings);
    Ok(json_response(code, w.object, &warnings))
}

/// `DeleteOptions` from the body (the k8s-openapi type: a wrongly typed field is a 400 naming it)
/// and the query. Returns the registry's options and whether `orphanDependents: false` was
/// asked for explicitly (kube-apiserver then answers 202 for an object that is not gone yet).
fn delete_options(req: &Req) -> Result<(DeleteOptions, bool), ApiError> {
    let body: meta::DeleteOptions = if req.body.iter().all(u8::is_ascii_whitespace) {
        meta::DeleteOptions::default()
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let pre = body.preconditions.unwrap_or_default();
    let resource_version = match pre.resource_version.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Revision::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!("invalid preconditions.resourceVersion {s:?}"))
        })?),
    };
    let orphan = body.orphan_dependents.or(req
        .query
        .get("orphanDependents")
        .map(|_| req.query.flag("orphanDependents")));
    let policy = body
        .propagation_policy
        .or_else(|| req.query.get("propagationPolicy").map(str::to_owned));
    let mut invalid = Vec::new();
    let propagation = match (policy.as_deref(), orphan) {
        (Some(_), Some(_)) => {
            invalid.push("propagationPolicy: Invalid value: \"\": orphanDependents and deletionPropagation cannot be both set".to_owned());
            Propagation::Background
        }
        (Some("Background"), None) | (None, Some(false)) | (None, None) => Propagation::Background,
        (Some("Foreground"), None) => Propagation::Foreground,
        (Some("Orphan"), None) | (None, Some(true)) => Propagation::Orphan,
        (Some(other), None) => {
            invalid.push(format!("propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""));
            Propagation::Background
        }
    };
    let dry_run_values: Vec<String> = body
        .dry_run
        .unwrap_or_default()
        .into_iter()
        .chain(req.query.all("dryRun").map(str::to_owned))
        .collect();
    if dry_run_values.iter().any(|v| v != "All") {
        invalid.push(format!(
            "dryRun: Unsupported value: {dry_run_values:?}: supported values: \"All\""
        ));
    }
    if !invalid.is_empty() {
        return Err(ApiError::invalid_options("DeleteOptions", invalid));
    }
    Ok((
        DeleteOptions {
            preconditions: Preconditions {
                uid: pre.uid.filter(|u| !u.is_empty()),
                resource_version,
            },
            propagation,
            dry_run: !dry_run_values.is_empty(),
        },
        orphan == Some(false),
    ))
}

async fn delete(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    req: Req,
) -> Result<Response<Body>, ApiError> {
    let (opts, orphan_false) = delete_options(&req)?;
    let d = app
        .registry
        .delete(res, namespace(rr), name(rr), &opts)
        .await
        .map_err(reg)?;
    // kube-apiserver: 202 only when the object is not gone yet and orphanDependents=false was
    // asked for explicitly; 200 otherwise (the object then carries deletionTimestamp).
    let code = if !d.gone && orphan_false && !opts.dry_run {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(json_response(code, d.object, &[]))
}

async fn delete_collection(
    app: &App,
    res: &'static Resource,
    rr: &ResourceRequest,
    req: Req,
) -> Result<Response<Body>, ApiError> {
    let list_opts = ListOptions::parse(&req.query, res, false)?;
    let (opts, _) = delete_options(&req)?;
    let (items, rev) = app
        .registry
        .delete_collection(res, &list_request(res, rr, &list_opts), &opts)
        .await
        .map_err(reg)?;
    Ok(json_response(
        StatusCode::OK,
        output::raw_list(res, rev, &items),
        &[],
    ))
}

/// The watch timeout: `timeoutSeconds`, else random in [30, 60) minutes as kube-apiserver does.
pub fn watch_timeout(opts: &ListOptions) -> Duration {
    opts.timeout.unwrap_or_else(|| {
        let r = uuid::Uuid::new_v4().as_u128() % 1800;
        Duration::from_secs(1800 + r as u64)
    })
}
