//! Generic handlers for every resource and verb: get, list, watch, create, update, patch
//! (JSON patch, merge patch, server-side apply), delete (preconditions, propagation, finalizers)
//! and deletecollection, plus the `status` subresource. Rules come from [`super::kinds`]; storage
//! from the `Store`; encodings from [`super::output`].

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use k8s_openapi::jiff::Timestamp;
use kfp_apiservice::types::LABEL_PIPELINE_ID;
use kfp_storage::{
    Key, LabelSelector, ListRequest, Object, Preconditions, ReadAt, Revision, StoreError,
};
use serde_json::{Value, json};

use super::apply;
use super::kinds::{self, Kind};
use super::managed;
use super::output::{self, Output};
use super::params::{ListOptions, WriteOptions};
use crate::app::{App, Req};
use crate::body::Body;
use crate::error::ApiError;
use crate::request_info::ResourceRequest;

/// How often a write retries after losing an optimistic-concurrency race it did not ask for.
const RETRIES: usize = 8;

fn json_response(status: StatusCode, body: Bytes, warnings: &[String]) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Routes a resource request.
pub async fn handle(app: &App, rr: &ResourceRequest, req: Req) -> Result<Response<Body>, ApiError> {
    let Some(kind) = Kind::from_resource(&rr.resource) else {
        return Err(ApiError::path_not_found());
    };
    match rr.subresource.as_deref() {
        None => {}
        Some("status") if kind.has_status() && rr.name.is_some() => {}
        Some(_) => return Err(ApiError::path_not_found()),
    }
    let status = rr.subresource.is_some();
    match rr.verb {
        "get" => get(app, kind, rr, &req).await,
        "list" => list(app, kind, rr, &req).await,
        "watch" if !status => super::watch::watch(app, kind, rr, &req).await,
        "create" if rr.name.is_none() && !status => create(app, kind, rr, req).await,
        "update" if rr.name.is_some() => update(app, kind, rr, req, status).await,
        "patch" if rr.name.is_some() => patch(app, kind, rr, req, status).await,
        "delete" if !status => delete(app, kind, rr, req).await,
        "deletecollection" if !status => delete_collection(app, kind, rr, req).await,
        verb => Err(ApiError::method_not_allowed(verb, &rr.resource)),
    }
}

fn namespace(rr: &ResourceRequest) -> Result<&str, ApiError> {
    rr.namespace.as_deref().ok_or_else(|| {
        ApiError::method_not_allowed(rr.verb, &format!("{} in all namespaces", rr.resource))
    })
}

fn key(kind: Kind, ns: &str, name: &str) -> Key {
    Key::new(kind.resource(), ns, name)
}

fn accept(req: &Req) -> Result<Output, ApiError> {
    output::negotiate(
        req.header(header::ACCEPT.as_str()),
        req.query.get("includeObject"),
    )
}

async fn get(
    app: &App,
    kind: Kind,
    rr: &ResourceRequest,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    let ns = namespace(rr)?;
    let name = rr.name.as_deref().unwrap_or_default();
    let out = accept(req)?;
    let o = app
        .store
        .get(&key(kind, ns, name))
        .await
        .map_err(|e| ApiError::from_store(e, kind.resource(), name))?;
    Ok(json_response(
        StatusCode::OK,
        output::object(kind, &o.data, out)?,
        &[],
    ))
}

/// The store request a list (or watch initial state) makes.
pub fn list_request(kind: Kind, rr: &ResourceRequest, opts: &ListOptions) -> ListRequest {
    ListRequest {
        resource: kind.resource().to_owned(),
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
    kind: Kind,
    rr: &ResourceRequest,
    req: &Req,
) -> Result<Response<Body>, ApiError> {
    let opts = ListOptions::parse(&req.query, kind.resource(), false)?;
    let out = accept(req)?;
    let page = app.store.list(&list_request(kind, rr, &opts)).await.map_err(|e| match e {
        StoreError::Gone { requested, compacted } if opts.continue_token.is_some() => {
            let mut err = ApiError::gone(format!(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list. (too old resource version: {} ({}))",
                requested.0, compacted.0
            ));
            err.reason = "Expired";
            err
        }
        e => ApiError::from_store(e, kind.resource(), ""),
    })?;
    Ok(json_response(
        StatusCode::OK,
        output::list(kind, &page, out)?,
        &[],
    ))
}

/// Reads a request body as JSON (also accepting YAML for `application/yaml`).
fn body_json(req: &Req) -> Result<Value, ApiError> {
    let ct = req
        .header(header::CONTENT_TYPE.as_str())
        .unwrap_or("application/json");
    let media = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}"))),
        "application/yaml"
        | "application/x-yaml"
        | "text/yaml"
        | "application/apply-patch+yaml" => yaml_one(&req.body),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other})"
        ))),
    }
}

fn yaml_one(body: &[u8]) -> Result<Value, ApiError> {
    let docs = kfp_apiservice::yaml::read_documents(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    match docs.len() {
        1 => Ok(docs.into_iter().next().map(|d| d.value).unwrap_or_default()),
        0 => Err(ApiError::bad_request("the request body is empty")),
        _ => Err(ApiError::bad_request(
            "the request body holds more than one YAML document",
        )),
    }
}

fn manager(req: &Req, opts: &WriteOptions) -> String {
    opts.field_manager
        .clone()
        .unwrap_or_else(|| managed::default_manager(req.header(header::USER_AGENT.as_str())))
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn create(
    app: &App,
    kind: Kind,
    rr: &ResourceRequest,
    req: Req,
) -> Result<Response<Body>, ApiError> {
    let ns = namespace(rr)?.to_owned();
    let opts = WriteOptions::parse(&req.query, false)?;
    let body = body_json(&req)?;
    let (mut obj, warnings) =
        kinds::prepare_create(app.store.as_ref(), kind, &ns, body, opts.field_validation).await?;
    managed::record(&mut obj, None, &manager(&req, &opts), "Update", None);
    let name = name_of(&obj);
    if opts.dry_run {
        return Ok(json_response(
            StatusCode::CREATED,
            to_bytes(&obj),
            &warnings,
        ));
    }
    let stored = app
        .store
        .create(&key(kind, &ns, &name), obj)
        .await
        .map_err(|e| ApiError::from_store(e, kind.resource(), &name))?;
    Ok(json_response(StatusCode::CREATED, stored.data, &warnings))
}

/// The resourceVersion a request body names, if any.
fn body_rv(v: &Value) -> Result<Option<Revision>, ApiError> {
    match v
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        None | Some("") => Ok(None),
        Some(s) => Revision::parse(s)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
    }
}

/// Finishes an update: finalizer-driven deletion, dry run, or the store write.
async fn commit_update(
    app: &App,
    k: &Key,
    old: &Object,
    new: Value,
    dry_run: bool,
) -> Result<Result<Response<Body>, StoreError>, ApiError> {
    let deleting = new
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    let finalizers_left = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if dry_run {
        return Ok(Ok(json_response(StatusCode::OK, to_bytes(&new), &[])));
    }
    let pre = Preconditions {
        uid: Some(old.uid.clone()),
        resource_version: Some(old.revision),
    };
    if deleting && !finalizers_left {
        // The last finalizer is gone: the object goes.
        return Ok(app
            .store
            .delete(k, &pre)
            .await
            .map(|o| json_response(StatusCode::OK, o.data, &[])));
    }
    Ok(app
        .store
        .update(k, new, &pre)
        .await
        .map(|o| json_response(StatusCode::OK, o.data, &[])))
}

async fn update(
    app: &App,
    kind: Kind,
    rr: &ResourceRequest,
    req: Req,
    status: bool,
) -> Result<Response<Body>, ApiError> {
    let ns = namespace(rr)?.to_owned();
    let name = rr.name.clone().unwrap_or_default();
    let opts = WriteOptions::parse(&req.query, false)?;
    let body = body_json(&req)?;
    match body.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n == name => {}
        None | Some("") => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let wanted = body_rv(&body)?;
    let k = key(kind, &ns, &name);
    for _ in 0..RETRIES {
        let old = app
            .store
            .get(&k)
            .await
            .map_err(|e| ApiError::from_store(e, kind.resource(), &name))?;
        if let Some(w) = wanted
            && w != old.revision
        {
            return Err(ApiError::conflict(
                kind.resource(),
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let old_json = old.json().map_err(|e| ApiError::internal(e.to_string()))?;
        let mut new_body = body.clone();
        if new_body.get("metadata").is_none_or(Value::is_null) {
            new_body["metadata"] = json!({});
        }
        new_body["metadata"]["name"] = json!(name);
        let (mut obj, warnings) = kinds::prepare_update(
            app.store.as_ref(),
            kind,
            &ns,
            new_body,
            old_json.clone(),
            status,
            opts.field_validation,
        )
        .await?;
        managed::record(
            &mut obj,
            Some(&old_json),
            &manager(&req, &opts),
            "Update",
            status.then_some("status"),
        );
        match commit_update(app, &k, &old, obj, opts.dry_run).await? {
            Ok(mut resp) => {
                add_warnings(&mut resp, &warnings);
                return Ok(resp);
            }
            Err(StoreError::Conflict { .. }) if wanted.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, kind.resource(), &name)),
        }
    }
    Err(ApiError::conflict(
        kind.resource(),
        &name,
        "too many concurrent writers; try again",
    ))
}

fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

enum PatchKind {
    Json(json_patch::Patch),
    Merge(Value),
    Apply(Value),
}

fn parse_patch(req: &Req) -> Result<PatchKind, ApiError> {
    let ct = req
        .header(header::CONTENT_TYPE.as_str())
        .unwrap_or_default();
    let media = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json-patch+json" => serde_json::from_slice(&req.body)
            .map(PatchKind::Json)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}"))),
        "application/merge-patch+json" => serde_json::from_slice(&req.body)
            .map(PatchKind::Merge)
            .map_err(|e| ApiError::bad_request(format!("error decoding merge patch: {e}"))),
        "application/apply-patch+yaml" => yaml_one(&req.body).map(PatchKind::Apply),
        _ => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {media})"
        ))),
    }
}

async fn patch(
    app: &App,
    kind: Kind,
    rr: &ResourceRequest,
    req: Req,
    status: bool,
) -> Result<Response<Body>, ApiError> {
    let ns = namespace(rr)?.to_owned();
    let name = rr.name.clone().unwrap_or_default();
    let patch = parse_patch(&req)?;
    let is_apply = matches!(patch, PatchKind::Apply(_));
    let opts = WriteOptions::parse(&req.query, is_apply)?;
    let mgr = manager(&req, &opts);
    let k = key(kind, &ns, &name);
    if req.body.len() > crate::app::MAX_PATCH_BYTES {
        return Err(ApiError::too_large(crate::app::MAX_PATCH_BYTES));
    }
    for _ in 0..RETRIES {
        let old = match app.store.get(&k).await {
            Ok(o) => o,
            Err(StoreError::NotFound(_)) if is_apply && !status => {
                // Server-side apply creates.
                let PatchKind::Apply(applied) = &patch else {
                    unreachable!("is_apply")
                };
                check_identity(kind, &name, applied)?;
                let mut body = applied.clone();
                body["metadata"]["name"] = json!(name);
                let (mut obj, warnings) = kinds::prepare_create(
                    app.store.as_ref(),
                    kind,
                    &ns,
                    body,
                    opts.field_validation,
                )
                .await?;
                managed::record(&mut obj, None, &mgr, "Apply", None);
                if let Some(Value::Array(es)) = obj.pointer_mut("/metadata/managedFields")
                    && let Some(e) = es.last_mut()
                {
                    e["fieldsV1"] = managed::fields_of(applied, false);
                }
                if opts.dry_run {
                    return Ok(json_response(
                        StatusCode::CREATED,
                        to_bytes(&obj),
                        &warnings,
                    ));
                }
                match app.store.create(&k, obj).await {
                    Ok(o) => return Ok(json_response(StatusCode::CREATED, o.data, &warnings)),
                    Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(ApiError::from_store(e, kind.resource(), &name)),
                }
            }
            Err(e) => return Err(ApiError::from_store(e, kind.resource(), &name)),
        };
        let live = old.json().map_err(|e| ApiError::internal(e.to_string()))?;
        let patched = match &patch {
            PatchKind::Json(p) => {
                let mut doc = live.clone();
                json_patch::patch(&mut doc, p).map_err(|e| {
                    let mut err = ApiError::bad_request(format!(
                        "the server rejected our request due to an error in our request: {e}"
                    ));
                    err.code = 422;
                    err.reason = "Invalid";
                    err
                })?;
                doc
            }
            PatchKind::Merge(p) => {
                let mut doc = live.clone();
                json_patch::merge(&mut doc, p);
                doc
            }
            PatchKind::Apply(applied) => {
                check_identity(kind, &name, applied)?;
                match apply::apply(&live, applied, &mgr, opts.force) {
                    Ok(a) => a.object,
                    Err(conflicts) => {
                        let causes: Vec<Value> = conflicts
                            .iter()
                            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": c.field}))
                            .collect();
                        let list: Vec<String> = conflicts
                            .iter()
                            .map(|c| format!("- {}: {}", c.manager, c.field))
                            .collect();
                        let mut err = ApiError::conflict(
                            kind.resource(),
                            &name,
                            &format!(
                                "Apply failed with {} conflict{}: {}",
                                conflicts.len(),
                                if conflicts.len() == 1 { "" } else { "s" },
                                list.join("\n")
                            ),
                        );
                        err.details = Some(
                            json!({"name": name, "group": kfp_apiservice::GROUP, "kind": kind.resource(), "causes": causes}),
                        );
                        return Err(err);
                    }
                }
            }
        };
        let wanted = body_rv(&patched)?.filter(|r| Some(*r) != body_rv(&live).ok().flatten());
        if let Some(w) = wanted
            && w != old.revision
        {
            return Err(ApiError::conflict(
                kind.resource(),
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if name_of(&patched) != name {
            return Err(ApiError::bad_request(
                "metadata.name: Invalid value: the name of a patched object cannot change",
            ));
        }
        let (mut obj, warnings) = kinds::prepare_update(
            app.store.as_ref(),
            kind,
            &ns,
            patched.clone(),
            live.clone(),
            status,
            opts.field_validation,
        )
        .await?;
        if is_apply {
            // apply() already recorded ownership; keep its managedFields.
            obj["metadata"]["managedFields"] = patched["metadata"]["managedFields"].clone();
        } else {
            managed::record(
                &mut obj,
                Some(&live),
                &mgr,
                "Update",
                status.then_some("status"),
            );
        }
        match commit_update(app, &k, &old, obj, opts.dry_run).await? {
            Ok(mut resp) => {
                add_warnings(&mut resp, &warnings);
                return Ok(resp);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, kind.resource(), &name)),
        }
    }
    Err(ApiError::conflict(
        kind.resource(),
        &name,
        "too many concurrent writers; try again",
    ))
}

fn check_identity(kind: Kind, name: &str, applied: &Value) -> Result<(), ApiError> {
    if applied
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != kind.kind())
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the applied object does not match {}",
            kind.kind()
        )));
    }
    match applied.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

/// `DeleteOptions` from the body and the query.
struct DeleteOptions {
    pre: Preconditions,
    propagation: String,
    dry_run: bool,
}

fn delete_options(req: &Req) -> Result<DeleteOptions, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let pre =
        Preconditions {
            uid: body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            resource_version: match body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
            {
                Some(s) => Some(Revision::parse(s).ok_or_else(|| {
                    ApiError::bad_request("invalid preconditions.resourceVersion")
                })?),
                None => None,
            },
        };
    let orphan = body
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| req.query.get("orphanDependents").map(|v| v == "true"));
    let propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| req.query.get("propagationPolicy").map(str::to_owned))
        .unwrap_or_else(|| {
            if orphan == Some(true) {
                "Orphan".into()
            } else {
                "Background".into()
            }
        });
    if !matches!(propagation.as_str(), "Background" | "Foreground" | "Orphan") {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{propagation}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
        )));
    }
    let mut dry_run = req.query.all("dryRun").any(|v| v == "All");
    if let Some(Value::Array(d)) = body.get("dryRun") {
        dry_run |= d.iter().any(|v| v == "All");
    }
    Ok(DeleteOptions {
        pre,
        propagation,
        dry_run,
    })
}

/// Deletes one object, cascading to a Pipeline's versions (or orphaning them).
async fn delete_one(
    app: &App,
    kind: Kind,
    k: &Key,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let name = k.name.clone();
    for _ in 0..RETRIES {
        let old = app
            .store
            .get(k)
            .await
            .map_err(|e| ApiError::from_store(e, kind.resource(), &name))?;
        let check = |want: &Option<String>, have: &str, what: &str| -> Result<(), ApiError> {
            match want {
                Some(w) if w != have => Err(ApiError::conflict(
                    kind.resource(),
                    &name,
                    &format!(
                        "Precondition failed: {what} in precondition: {w}, {what} in object meta: {have}"
                    ),
                )),
                _ => Ok(()),
            }
        };
        check(&opts.pre.uid, &old.uid, "UID")?;
        check(
            &opts.pre.resource_version.map(|r| r.to_string()),
            &old.revision.to_string(),
            "ResourceVersion",
        )?;
        let mut live = old.json().map_err(|e| ApiError::internal(e.to_string()))?;
        if opts.dry_run {
            return Ok(live);
        }
        if kind == Kind::Pipeline {
            cascade(app, k, &old.uid, &opts.propagation).await?;
        }
        let finalizers = live
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let pre = Preconditions {
            uid: Some(old.uid.clone()),
            resource_version: Some(old.revision),
        };
        let result = if finalizers {
            if live
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|t| !t.is_null())
            {
                return Ok(live);
            }
            let now = Timestamp::now();
            live["metadata"]["deletionTimestamp"] = json!(
                Timestamp::from_second(now.as_second())
                    .unwrap_or(now)
                    .to_string()
            );
            live["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            app.store.update(k, live, &pre).await
        } else {
            app.store.delete(k, &pre).await
        };
        match result {
            Ok(o) => return o.json().map_err(|e| ApiError::internal(e.to_string())),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, kind.resource(), &name)),
        }
    }
    Err(ApiError::conflict(
        kind.resource(),
        &name,
        "too many concurrent writers; try again",
    ))
}

/// Deleting a Pipeline deletes its versions (no garbage collector does it for an aggregated
/// API reliably); `Orphan` removes their owner reference instead.
async fn cascade(app: &App, pipeline: &Key, uid: &str, propagation: &str) -> Result<(), ApiError> {
    let selector = LabelSelector::parse(&format!("{LABEL_PIPELINE_ID}={uid}"))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let req = ListRequest {
        resource: Kind::PipelineVersion.resource().to_owned(),
        namespace: Some(pipeline.namespace.clone()),
        labels: selector,
        ..Default::default()
    };
    if propagation != "Orphan" {
        app.store
            .delete_collection(&req)
            .await
            .map_err(|e| ApiError::from_store(e, "pipelineversions", ""))?;
        return Ok(());
    }
    let page = app
        .store
        .list(&req)
        .await
        .map_err(|e| ApiError::from_store(e, "pipelineversions", ""))?;
    for v in page.items {
        let mut json = v.json().map_err(|e| ApiError::internal(e.to_string()))?;
        if let Some(Value::Array(refs)) = json.pointer_mut("/metadata/ownerReferences") {
            refs.retain(|r| r["uid"] != uid);
        }
        if let Some(Value::Object(labels)) = json.pointer_mut("/metadata/labels") {
            labels.remove(LABEL_PIPELINE_ID);
        }
        let pre = Preconditions {
            uid: Some(v.uid.clone()),
            resource_version: Some(v.revision),
        };
        match app.store.update(&v.key, json, &pre).await {
            Ok(_) | Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, "pipelineversions", &v.key.name)),
        }
    }
    Ok(())
}

async fn delete(
    app: &App,
    kind: Kind,
    rr: &ResourceRequest,
    req: Req,
) -> Result<Response<Body>, ApiError> {
    let ns = namespace(rr)?;
    let name = rr.name.clone().unwrap_or_default();
    let opts = delete_options(&req)?;
    let last = delete_one(app, kind, &key(kind, ns, &name), &opts).await?;
    let pending = last
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
        && last
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    let code = if pending && opts.propagation != "Orphan" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(json_response(code, to_bytes(&last), &[]))
}

async fn delete_collection(
    app: &App,
    kind: Kind,
    rr: &ResourceRequest,
    req: Req,
) -> Result<Response<Body>, ApiError> {
    let list_opts = ListOptions::parse(&req.query, kind.resource(), false)?;
    let opts = delete_options(&req)?;
    let mut lr = list_request(kind, rr, &list_opts);
    lr.limit = None;
    lr.continue_token = None;
    lr.at = ReadAt::Latest;
    let page = app
        .store
        .list(&lr)
        .await
        .map_err(|e| ApiError::from_store(e, kind.resource(), ""))?;
    let mut items = Vec::new();
    for o in page.items {
        match delete_one(app, kind, &o.key, &opts).await {
            Ok(v) => items.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rev = app
        .store
        .current_revision()
        .await
        .map_err(|e| ApiError::from_store(e, kind.resource(), ""))?;
    let list = json!({"apiVersion": kfp_apiservice::API_VERSION, "kind": kind.list_kind(), "metadata": {"resourceVersion": rev.to_string()}, "items": items});
    Ok(json_response(StatusCode::OK, to_bytes(&list), &[]))
}

/// The watch timeout: `timeoutSeconds`, else random in [30, 60) minutes as kube-apiserver does.
pub fn watch_timeout(opts: &ListOptions) -> Duration {
    opts.timeout.unwrap_or_else(|| {
        let r = uuid::Uuid::new_v4().as_u128() % 1800;
        Duration::from_secs(1800 + r as u64)
    })
}
