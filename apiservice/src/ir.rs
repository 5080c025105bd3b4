//! Pipeline-spec (KFP IR) validation: what KFP's server checks, and the graph checks it leaves
//! for run time.
//!
//! KFP checks: exactly one `PipelineSpec` document, `schemaVersion` `2.1.0`, `root`,
//! `pipelineInfo.name` matching `^[a-z0-9][a-z0-9-]{0,127}$`, at most one kubernetes platform spec,
//! strict parsing (unknown top-level fields and bad enum values are errors). We add: component
//! and executor references resolve, `dependentTasks` and producer tasks exist in the same DAG, no
//! dependency cycles (between tasks, or between components through sub-DAGs), parameter type
//! names and default values agree, a kubernetes platform spec is well-formed and names executors
//! that exist, and the stored spec fits in one object ([`MAX_SPEC_JSON_BYTES`]).
//!
//! Nested messages are checked for what we rely on, but unknown *nested* fields are accepted, so
//! a pipeline compiled by a newer SDK that adds a field deep inside is not refused; the top-level
//! message, `pipelineInfo` and the platform spec's top level are strict.
//!
//! Pure functions over `serde_json::Value`; never panics, never recurses over user-controlled
//! depth (graphs are walked iteratively).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::{Map, Value};

use crate::field::{ErrorList, ErrorType, FieldError, FieldPath};
use crate::names;
use crate::yaml::{self, Document};

/// The only IR schema version KFP runs.
pub const SCHEMA_VERSION: &str = "2.1.0";

/// The largest pipeline spec (plus platform spec), as compact JSON, that one PipelineVersion may
/// hold: 1.5 MiB, etcd's default request limit, so that every store (SQL or CRDs in etcd) can keep
/// every object this server accepts and the object still fits a 3 MiB Kubernetes request body.
pub const MAX_SPEC_JSON_BYTES: usize = 1536 * 1024;

const TOP_LEVEL_FIELDS: &[(&str, &str)] = &[
    ("pipelineInfo", "pipeline_info"),
    ("deploymentSpec", "deployment_spec"),
    ("sdkVersion", "sdk_version"),
    ("schemaVersion", "schema_version"),
    ("components", "components"),
    ("root", "root"),
    ("defaultPipelineRoot", "default_pipeline_root"),
];

const PIPELINE_INFO_FIELDS: &[(&str, &str)] = &[
    ("name", "name"),
    ("displayName", "display_name"),
    ("description", "description"),
];

/// `ParameterType.ParameterTypeEnum`, in proto number order.
const PARAMETER_TYPES: &[&str] = &[
    "PARAMETER_TYPE_ENUM_UNSPECIFIED",
    "NUMBER_DOUBLE",
    "NUMBER_INTEGER",
    "STRING",
    "BOOLEAN",
    "LIST",
    "STRUCT",
    "TASK_FINAL_STATUS",
    "TASK_CONFIG",
];

/// The deprecated `PrimitiveType.PrimitiveTypeEnum`, in proto number order.
const PRIMITIVE_TYPES: &[&str] = &["PRIMITIVE_TYPE_UNSPECIFIED", "INT", "DOUBLE", "STRING"];

const TRIGGER_STRATEGIES: &[&str] = &[
    "TRIGGER_STRATEGY_UNSPECIFIED",
    "ALL_UPSTREAM_TASKS_SUCCEEDED",
    "ALL_UPSTREAM_TASKS_COMPLETED",
];

/// A spec problem, located by document (in a multi-document file) and field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// 1-based document number, when the problem came from a file.
    pub document: Option<usize>,
    /// The field and what is wrong with it.
    pub error: FieldError,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some(d) => write!(f, "document {d}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// A file that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedPipeline {
    /// The `PipelineSpec` document, verbatim.
    pub pipeline_spec: Value,
    /// The kubernetes `PlatformSpec` document, verbatim, when the file has one.
    pub platform_spec: Option<Value>,
    /// `pipelineInfo.name`.
    pub name: String,
    /// `pipelineInfo.displayName`, when set.
    pub display_name: Option<String>,
    /// `pipelineInfo.description`, when set.
    pub description: Option<String>,
}

/// Reads and validates a pipeline file: compiled IR as YAML (possibly a pipeline spec document
/// plus a platform spec document) or JSON. Files over 32 MiB are refused before parsing.
pub fn parse_pipeline_file(bytes: &[u8]) -> Result<ParsedPipeline, Vec<SpecError>> {
    let docs = yaml::read_documents(bytes).map_err(|e| {
        let document = match &e {
            yaml::ReadError::Syntax { document, .. } => Some(*document),
            _ => None,
        };
        let detail = match e {
            yaml::ReadError::Syntax { message, .. } => format!("not valid YAML: {message}"),
            other => other.to_string(),
        };
        vec![SpecError {
            document,
            error: FieldError::invalid(FieldPath::root(), detail),
        }]
    })?;
    from_documents(docs)
}

enum DocKind {
    Pipeline,
    Platform,
    Other(String),
}

fn classify(value: &Value) -> DocKind {
    let Some(obj) = value.as_object() else {
        return DocKind::Other(format!(
            "must be a mapping (a KFP PipelineSpec), found {}",
            type_name(value)
        ));
    };
    if let (Some(api), Some(kind)) = (
        obj.get("apiVersion").and_then(Value::as_str),
        obj.get("kind").and_then(Value::as_str),
    ) {
        let why = if api.starts_with("argoproj.io/") && kind == "Workflow" {
            format!(
                "a KFP v1 Argo Workflow ({api} {kind}) is not a KFP v2 pipeline spec; only \
                 pipelines compiled by the KFP v2 SDK (schemaVersion {SCHEMA_VERSION}) are supported"
            )
        } else if api.starts_with(crate::types::GROUP) {
            format!(
                "a Kubernetes {kind} manifest ({api}), not a compiled pipeline spec; apply it \
                 with kubectl, or upload the IR from its spec.pipelineSpec"
            )
        } else {
            format!("a Kubernetes {kind} object ({api}), not a compiled pipeline spec")
        };
        return DocKind::Other(why);
    }
    if obj.contains_key("platforms") && !obj.keys().any(|k| is_top_level_field(k)) {
        return DocKind::Platform;
    }
    DocKind::Pipeline
}

fn is_top_level_field(key: &str) -> bool {
    TOP_LEVEL_FIELDS
        .iter()
        .any(|(camel, snake)| key == *camel || key == *snake)
}

fn from_documents(docs: Vec<Document>) -> Result<ParsedPipeline, Vec<SpecError>> {
    let mut errors = Vec::new();
    let mut pipelines = Vec::new();
    let mut platforms = Vec::new();
    for doc in &docs {
        match classify(&doc.value) {
            DocKind::Pipeline => pipelines.push(doc),
            DocKind::Platform => platforms.push(doc),
            DocKind::Other(why) => errors.push(SpecError {
                document: Some(doc.index),
                error: FieldError::invalid(FieldPath::root(), why),
            }),
        }
    }
    let whole = |detail: String| SpecError {
        document: None,
        error: FieldError::invalid(FieldPath::root(), detail),
    };
    match pipelines.len() {
        0 if errors.is_empty() => {
            let detail = if docs.is_empty() {
                "no pipeline spec found: the file holds no YAML document".to_owned()
            } else {
                "no pipeline spec found: the file holds only a platform spec; a compiled pipeline \
                 needs a document with pipelineInfo, root and schemaVersion"
                    .to_owned()
            };
            errors.push(whole(detail));
        }
        0 | 1 => {}
        _ => errors.push(whole(format!(
            "multiple pipeline specs provided (documents {}); a file holds one pipeline spec and \
             at most one platform spec",
            pipelines
                .iter()
                .map(|d| d.index.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
    let kubernetes_platforms: Vec<_> = platforms
        .iter()
        .filter(|d| d.value.pointer("/platforms/kubernetes").is_some())
        .collect();
    if kubernetes_platforms.len() > 1 {
        errors.push(whole(format!(
            "multiple platform specs provided (documents {}); at most one kubernetes platform \
             spec is allowed",
            kubernetes_platforms
                .iter()
                .map(|d| d.index.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let pipeline = pipelines[0];
    let platform = platforms.first().copied();
    let mut errors: Vec<SpecError> = validate_pipeline_spec(&pipeline.value)
        .into_iter()
        .map(|error| SpecError {
            document: Some(pipeline.index),
            error,
        })
        .collect();
    if let Some(platform) = platform {
        errors.extend(
            validate_platform_spec(&platform.value, &pipeline.value)
                .into_iter()
                .map(|error| SpecError {
                    document: Some(platform.index),
                    error,
                }),
        );
    }
    if let Some(e) = check_size(&pipeline.value, platform.map(|d| &d.value)) {
        errors.push(SpecError {
            document: None,
            error: e,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let info = field(pipeline.value.as_object(), "pipelineInfo", "pipeline_info");
    let text = |camel, snake| {
        field(info.and_then(Value::as_object), camel, snake)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(ParsedPipeline {
        name: text("name", "name").unwrap_or_default(),
        display_name: text("displayName", "display_name"),
        description: text("description", "description"),
        pipeline_spec: pipeline.value.clone(),
        platform_spec: platform.map(|d| d.value.clone()),
    })
}

/// The size rule on its own: the compact JSON of the spec (and platform spec) must fit
/// [`MAX_SPEC_JSON_BYTES`].
pub fn check_size(pipeline_spec: &Value, platform_spec: Option<&Value>) -> Option<FieldError> {
    let size = json_len(pipeline_spec) + platform_spec.map_or(0, json_len);
    (size > MAX_SPEC_JSON_BYTES).then(|| {
        FieldError::new(
            ErrorType::TooLong,
            FieldPath::root(),
            format!(
                "pipeline spec is {:.1} MiB as JSON; a PipelineVersion holds at most 1.5 MiB \
                 (etcd's object limit, so that every store can keep it)",
                size as f64 / (1024.0 * 1024.0)
            ),
        )
    })
}

fn json_len(v: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    // Writing a Value to an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// Looks a proto field up under its JSON name or its proto (snake_case) name, as protojson does.
fn field<'a>(obj: Option<&'a Map<String, Value>>, camel: &str, snake: &str) -> Option<&'a Value> {
    let obj = obj?;
    obj.get(camel)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

/// Reports fields of `obj` not in `known` (strict protojson).
fn unknown_fields(
    obj: &Map<String, Value>,
    known: &[(&str, &str)],
    path: &FieldPath,
    errs: &mut ErrorList,
) {
    for key in obj.keys() {
        if !known.iter().any(|(c, s)| key == c || key == s) {
            let names: Vec<&str> = known.iter().map(|(c, _)| *c).collect();
            errs.push(FieldError::new(
                ErrorType::NotSupported,
                path.child(key),
                format!(
                    "unknown field \"{key}\"; supported fields: {}",
                    names.join(", ")
                ),
            ));
        }
    }
    for (camel, snake) in known {
        if camel != snake && obj.contains_key(*camel) && obj.contains_key(*snake) {
            errs.push(FieldError::new(
                ErrorType::Duplicate,
                path.child(snake),
                format!("\"{camel}\" and \"{snake}\" are the same field; set it once"),
            ));
        }
    }
}

fn expect_object<'a>(
    value: &'a Value,
    path: &FieldPath,
    errs: &mut ErrorList,
) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(m) => Some(m),
        other => {
            errs.push(FieldError::new(
                ErrorType::TypeInvalid,
                path.clone(),
                format!("must be a mapping, found {}", type_name(other)),
            ));
            None
        }
    }
}

fn expect_str<'a>(value: &'a Value, path: &FieldPath, errs: &mut ErrorList) -> Option<&'a str> {
    match value {
        Value::String(s) => Some(s),
        Value::Bool(b) => {
            // kubectl and most Kubernetes tooling read YAML 1.1, where an unquoted y/n/yes/no/
            // on/off is a boolean: a name written that way arrives here as true/false.
            errs.push(FieldError::new(
                ErrorType::TypeInvalid,
                path.clone(),
                format!(
                    "must be a string, found a boolean ({b}); YAML 1.1 readers such as kubectl turn \
                     an unquoted {} into a boolean, so quote the name in the manifest",
                    if *b { "y, yes or on" } else { "n, no or off" }
                ),
            ));
            None
        }
        other => {
            errs.push(FieldError::new(
                ErrorType::TypeInvalid,
                path.clone(),
                format!("must be a string, found {}", type_name(other)),
            ));
            None
        }
    }
}

/// What the checks of one pipeline spec need to know about the whole spec.
struct Context<'a> {
    components: BTreeMap<&'a str, &'a Map<String, Value>>,
    executors: Option<BTreeSet<&'a str>>,
    /// component name -> components its DAG tasks reference (for the component cycle check).
    component_edges: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

/// Validates one `PipelineSpec` value. Paths are relative to the spec (`root.dag.tasks...`).
pub fn validate_pipeline_spec(spec: &Value) -> ErrorList {
    let mut errs = ErrorList::new();
    let root_path = FieldPath::root();
    let Some(obj) = spec.as_object() else {
        errs.push(FieldError::new(
            ErrorType::TypeInvalid,
            root_path,
            format!(
                "must be a mapping (a KFP PipelineSpec), found {}",
                type_name(spec)
            ),
        ));
        return errs;
    };
    unknown_fields(obj, TOP_LEVEL_FIELDS, &root_path, &mut errs);

    match field(Some(obj), "schemaVersion", "schema_version") {
        None => errs.push(FieldError::required(
            FieldPath::new("schemaVersion"),
            format!("KFP only supports schema version {SCHEMA_VERSION}; schemaVersion is missing"),
        )),
        Some(v) => {
            if let Some(s) = expect_str(v, &FieldPath::new("schemaVersion"), &mut errs)
                && s != SCHEMA_VERSION
            {
                errs.push(FieldError::new(
                    ErrorType::NotSupported,
                    FieldPath::new("schemaVersion"),
                    format!("KFP only supports schema version {SCHEMA_VERSION}, got \"{s}\""),
                ));
            }
        }
    }
    for (camel, snake) in [
        ("sdkVersion", "sdk_version"),
        ("defaultPipelineRoot", "default_pipeline_root"),
    ] {
        if let Some(v) = field(Some(obj), camel, snake) {
            expect_str(v, &FieldPath::new(camel), &mut errs);
        }
    }
    check_pipeline_info(field(Some(obj), "pipelineInfo", "pipeline_info"), &mut errs);

    // deploymentSpec.executors: the executor names components may use.
    let mut executors = None;
    if let Some(ds) = field(Some(obj), "deploymentSpec", "deployment_spec") {
        let path = FieldPath::new("deploymentSpec");
        if let Some(ds) = expect_object(ds, &path, &mut errs)
            && let Some(ex) = ds.get("executors")
        {
            let path = path.child("executors");
            if let Some(ex) = expect_object(ex, &path, &mut errs) {
                for (name, e) in ex {
                    expect_object(e, &path.child(name), &mut errs);
                }
                executors = Some(ex.keys().map(String::as_str).collect());
            }
        }
    }

    let mut ctx = Context {
        components: BTreeMap::new(),
        executors,
        component_edges: BTreeMap::new(),
    };
    if let Some(comps) = field(Some(obj), "components", "components") {
        let path = FieldPath::new("components");
        if let Some(comps) = expect_object(comps, &path, &mut errs) {
            for (name, c) in comps {
                if let Some(c) = expect_object(c, &path.child(name), &mut errs) {
                    ctx.components.insert(name.as_str(), c);
                }
            }
        }
    }
    let components: Vec<(&str, &Map<String, Value>)> =
        ctx.components.iter().map(|(k, v)| (*k, *v)).collect();
    for (name, comp) in components {
        check_component(
            Some(name),
            comp,
            &FieldPath::new("components").child(name),
            &mut ctx,
            &mut errs,
        );
    }
    match field(Some(obj), "root", "root") {
        None => errs.push(FieldError::required(
            FieldPath::new("root"),
            "the pipeline's root component (its DAG) is missing",
        )),
        Some(root) => {
            let path = FieldPath::new("root");
            if let Some(root) = expect_object(root, &path, &mut errs) {
                if field(Some(root), "dag", "dag").is_none() {
                    errs.push(FieldError::required(
                        path.child("dag"),
                        "the root component must be a DAG",
                    ));
                }
                check_component(None, root, &path, &mut ctx, &mut errs);
            }
        }
    }
    if let Some(cycle) = find_cycle(&ctx.component_edges) {
        errs.push(FieldError::invalid(
            FieldPath::new("components"),
            format!(
                "components reference each other in a cycle through their DAGs: {}",
                cycle.join(" -> ")
            ),
        ));
    }
    errs
}

fn check_pipeline_info(info: Option<&Value>, errs: &mut ErrorList) {
    let path = FieldPath::new("pipelineInfo");
    let Some(info) = info else {
        errs.push(FieldError::required(
            path,
            "pipelineInfo (with the pipeline's name) is missing",
        ));
        return;
    };
    let Some(info) = expect_object(info, &path, errs) else {
        return;
    };
    unknown_fields(info, PIPELINE_INFO_FIELDS, &path, errs);
    match field(Some(info), "name", "name") {
        None => errs.push(FieldError::required(
            path.child("name"),
            "the pipeline's name is missing",
        )),
        Some(v) => {
            if let Some(name) = expect_str(v, &path.child("name"), errs)
                && let Some(why) = names::pipeline_info_name(name)
            {
                errs.push(FieldError::invalid(
                    path.child("name"),
                    format!("\"{name}\": {why}"),
                ));
            }
        }
    }
    for (camel, snake) in [
        ("displayName", "display_name"),
        ("description", "description"),
    ] {
        if let Some(v) = field(Some(info), camel, snake) {
            expect_str(v, &path.child(camel), errs);
        }
    }
}

/// Checks a ComponentSpec. `name` is None for `root`.
fn check_component<'a>(
    name: Option<&'a str>,
    comp: &'a Map<String, Value>,
    path: &FieldPath,
    ctx: &mut Context<'a>,
    errs: &mut ErrorList,
) {
    let inputs = field(Some(comp), "inputDefinitions", "input_definitions");
    let (input_params, input_artifacts) =
        check_definitions(inputs, &path.child("inputDefinitions"), true, errs);
    let outputs = field(Some(comp), "outputDefinitions", "output_definitions");
    check_definitions(outputs, &path.child("outputDefinitions"), false, errs);

    let dag = field(Some(comp), "dag", "dag");
    let executor = field(Some(comp), "executorLabel", "executor_label");
    if dag.is_some() && executor.is_some() {
        errs.push(FieldError::forbidden(
            path.clone(),
            "a component is either a DAG or an executor: set dag or executorLabel, not both",
        ));
    }
    if let Some(executor) = executor {
        let p = path.child("executorLabel");
        if let Some(label) = expect_str(executor, &p, errs) {
            match &ctx.executors {
                Some(known) if known.contains(label) => {}
                _ => errs.push(FieldError::not_found(
                    p,
                    format!("executor \"{label}\" is not defined in deploymentSpec.executors"),
                )),
            }
        }
    } else if dag.is_none() && name.is_some() {
        errs.push(FieldError::required(
            path.clone(),
            "a component needs either a dag or an executorLabel",
        ));
    }
    if let Some(dag) = dag {
        let p = path.child("dag");
        if let Some(dag) = expect_object(dag, &p, errs) {
            let refs = check_dag(dag, &p, &input_params, &input_artifacts, ctx, errs);
            if let Some(name) = name {
                ctx.component_edges.insert(name, refs);
            }
        }
    }
}

/// Checks input/output definitions; returns the parameter and artifact names declared.
fn check_definitions<'a>(
    defs: Option<&'a Value>,
    path: &FieldPath,
    inputs: bool,
    errs: &mut ErrorList,
) -> (BTreeSet<&'a str>, BTreeSet<&'a str>) {
    let mut params = BTreeSet::new();
    let mut artifacts = BTreeSet::new();
    let Some(defs) = defs else {
        return (params, artifacts);
    };
    let Some(defs) = expect_object(defs, path, errs) else {
        return (params, artifacts);
    };
    if let Some(ps) = defs.get("parameters") {
        let pp = path.child("parameters");
        if let Some(ps) = expect_object(ps, &pp, errs) {
            for (pname, spec) in ps {
                params.insert(pname.as_str());
                let p = pp.child(pname);
                if let Some(spec) = expect_object(spec, &p, errs) {
                    check_parameter_spec(spec, &p, inputs, errs);
                }
            }
        }
    }
    if let Some(arts) = defs.get("artifacts") {
        let ap = path.child("artifacts");
        if let Some(arts) = expect_object(arts, &ap, errs) {
            for (aname, spec) in arts {
                artifacts.insert(aname.as_str());
                expect_object(spec, &ap.child(aname), errs);
            }
        }
    }
    (params, artifacts)
}

fn enum_value<'a>(
    value: &'a Value,
    allowed: &'a [&'a str],
    path: &FieldPath,
    errs: &mut ErrorList,
) -> Option<&'a str> {
    let found = match value {
        Value::String(s) => allowed.iter().find(|a| **a == s.as_str()).copied(),
        Value::Number(n) => n
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| allowed.get(i).copied()),
        _ => None,
    };
    if found.is_none() {
        errs.push(FieldError::new(
            ErrorType::NotSupported,
            path.clone(),
            format!(
                "{value} is not a valid value; supported values: {}",
                allowed.join(", ")
            ),
        ));
    }
    found
}

fn check_parameter_spec(
    spec: &Map<String, Value>,
    path: &FieldPath,
    inputs: bool,
    errs: &mut ErrorList,
) {
    let mut ptype = None;
    if let Some(t) = field(Some(spec), "parameterType", "parameter_type") {
        ptype = enum_value(t, PARAMETER_TYPES, &path.child("parameterType"), errs);
    }
    if let Some(t) = field(Some(spec), "type", "type") {
        enum_value(t, PRIMITIVE_TYPES, &path.child("type"), errs);
    }
    if !inputs {
        return;
    }
    let Some(default) = field(Some(spec), "defaultValue", "default_value") else {
        return;
    };
    let ok = match ptype {
        Some("NUMBER_DOUBLE") => default.is_number(),
        Some("NUMBER_INTEGER") => default
            .as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0),
        Some("STRING") => default.is_string(),
        Some("BOOLEAN") => default.is_boolean(),
        Some("LIST") => default.is_array(),
        Some("STRUCT") => default.is_object(),
        _ => true,
    };
    if !ok {
        errs.push(FieldError::invalid(
            path.child("defaultValue"),
            format!(
                "default value {default} does not match parameter type {}",
                ptype.unwrap_or_default()
            ),
        ));
    }
}

/// How a task's inputs of one kind (parameters or artifacts) are checked.
struct InputKind<'s> {
    /// `parameters` or `artifacts`.
    key: &'static str,
    /// Fields naming a producing task in the same DAG.
    producers: &'static [(&'static str, &'static str)],
    /// The field naming an input of the enclosing component.
    component_input: (&'static str, &'static str),
    /// The enclosing component's declared inputs of this kind.
    declared: &'s BTreeSet<&'s str>,
    /// For messages.
    what: &'static str,
}

/// Checks a DAG; returns the component names its tasks reference.
fn check_dag<'a>(
    dag: &'a Map<String, Value>,
    path: &FieldPath,
    input_params: &BTreeSet<&str>,
    input_artifacts: &BTreeSet<&str>,
    ctx: &Context<'a>,
    errs: &mut ErrorList,
) -> BTreeSet<&'a str> {
    let mut refs = BTreeSet::new();
    let mut tasks: BTreeMap<&str, &Map<String, Value>> = BTreeMap::new();
    let tasks_path = path.child("tasks");
    if let Some(ts) = dag.get("tasks")
        && let Some(ts) = expect_object(ts, &tasks_path, errs)
    {
        for (name, t) in ts {
            if let Some(t) = expect_object(t, &tasks_path.child(name), errs) {
                tasks.insert(name.as_str(), t);
            }
        }
    }
    // task -> tasks it waits for
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (&tname, task) in &tasks {
        let tp = tasks_path.child(tname);
        let deps = edges.entry(tname).or_default();
        let mut upstream = |producer: &'a Value, p: FieldPath, errs: &mut ErrorList| {
            if let Some(producer) = expect_str(producer, &p, errs) {
                if tasks.contains_key(producer) {
                    deps.insert(producer);
                } else {
                    errs.push(FieldError::not_found(
                        p,
                        format!("task \"{producer}\" does not exist in this DAG"),
                    ));
                }
            }
        };
        // componentRef
        let cp = tp.child("componentRef");
        match field(Some(task), "componentRef", "component_ref") {
            None => errs.push(FieldError::required(cp, "every task needs a componentRef")),
            Some(cr) => {
                if let Some(cr) = expect_object(cr, &cp, errs) {
                    match cr.get("name") {
                        None => errs.push(FieldError::required(
                            cp.child("name"),
                            "the referenced component's name is missing",
                        )),
                        Some(n) => {
                            if let Some(n) = expect_str(n, &cp.child("name"), errs) {
                                if let Some((&k, _)) = ctx.components.get_key_value(n) {
                                    refs.insert(k);
                                } else {
                                    errs.push(FieldError::not_found(
                                        cp.child("name"),
                                        format!("component \"{n}\" is not defined in components"),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        // dependentTasks
        if let Some(dt) = field(Some(task), "dependentTasks", "dependent_tasks") {
            let dp = tp.child("dependentTasks");
            match dt {
                Value::Array(items) => {
                    for (i, d) in items.iter().enumerate() {
                        upstream(d, dp.index(i), errs);
                    }
                }
                other => errs.push(FieldError::new(
                    ErrorType::TypeInvalid,
                    dp,
                    format!(
                        "must be a sequence of task names, found {}",
                        type_name(other)
                    ),
                )),
            }
        }
        // inputs: producer tasks exist in this DAG; component inputs are declared.
        if let Some(inputs) = field(Some(task), "inputs", "inputs") {
            let ip = tp.child("inputs");
            if let Some(inputs) = expect_object(inputs, &ip, errs) {
                let kinds = [
                    InputKind {
                        key: "parameters",
                        producers: &[
                            ("taskOutputParameter", "task_output_parameter"),
                            ("taskFinalStatus", "task_final_status"),
                        ],
                        component_input: ("componentInputParameter", "component_input_parameter"),
                        declared: input_params,
                        what: "input parameter",
                    },
                    InputKind {
                        key: "artifacts",
                        producers: &[("taskOutputArtifact", "task_output_artifact")],
                        component_input: ("componentInputArtifact", "component_input_artifact"),
                        declared: input_artifacts,
                        what: "input artifact",
                    },
                ];
                for InputKind {
                    key,
                    producers,
                    component_input: (ci_camel, ci_snake),
                    declared,
                    what,
                } in kinds
                {
                    let Some(entries) = inputs.get(key) else {
                        continue;
                    };
                    let kp = ip.child(key);
                    let Some(entries) = expect_object(entries, &kp, errs) else {
                        continue;
                    };
                    for (iname, spec) in entries {
                        let p = kp.child(iname);
                        let Some(spec) = expect_object(spec, &p, errs) else {
                            continue;
                        };
                        for (camel, snake) in producers {
                            let Some(src) = field(Some(spec), camel, snake) else {
                                continue;
                            };
                            let sp = p.child(camel);
                            if let Some(src) = expect_object(src, &sp, errs) {
                                match field(Some(src), "producerTask", "producer_task") {
                                    Some(prod) => upstream(prod, sp.child("producerTask"), errs),
                                    None => errs.push(FieldError::required(
                                        sp.child("producerTask"),
                                        "the producing task is missing",
                                    )),
                                }
                            }
                        }
                        if let Some(ci) = field(Some(spec), ci_camel, ci_snake) {
                            let cp = p.child(ci_camel);
                            if let Some(n) = expect_str(ci, &cp, errs)
                                && !declared.contains(n)
                            {
                                errs.push(FieldError::not_found(
                                    cp,
                                    format!(
                                        "{what} \"{n}\" is not declared in the enclosing \
                                         component's inputDefinitions"
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        // triggerPolicy.strategy
        if let Some(tp_) = field(Some(task), "triggerPolicy", "trigger_policy") {
            let p = tp.child("triggerPolicy");
            if let Some(tp_) = expect_object(tp_, &p, errs)
                && let Some(s) = tp_.get("strategy")
            {
                enum_value(s, TRIGGER_STRATEGIES, &p.child("strategy"), errs);
            }
        }
        if deps.contains(tname) {
            errs.push(FieldError::invalid(
                tp.clone(),
                format!("task \"{tname}\" depends on itself"),
            ));
            deps.remove(tname);
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        errs.push(FieldError::invalid(
            tasks_path.clone(),
            format!(
                "tasks depend on each other in a cycle: {}",
                cycle.join(" -> ")
            ),
        ));
    }
    // dag.outputs: producerSubtask must exist.
    if let Some(outputs) = dag.get("outputs") {
        let op = path.child("outputs");
        if let Some(outputs) = expect_object(outputs, &op, errs) {
            let check_selector = |sel: &Value, p: FieldPath, errs: &mut ErrorList| {
                if let Some(sel) = expect_object(sel, &p, errs)
                    && let Some(prod) = field(Some(sel), "producerSubtask", "producer_subtask")
                {
                    let pp = p.child("producerSubtask");
                    if let Some(prod) = expect_str(prod, &pp, errs)
                        && !tasks.contains_key(prod)
                    {
                        errs.push(FieldError::not_found(
                            pp,
                            format!("task \"{prod}\" does not exist in this DAG"),
                        ));
                    }
                }
            };
            for (kind, list_key) in [
                ("artifacts", "artifactSelectors"),
                ("parameters", "parameterSelectors"),
            ] {
                let Some(m) = outputs.get(kind) else { continue };
                let kp = op.child(kind);
                let Some(m) = expect_object(m, &kp, errs) else {
                    continue;
                };
                for (oname, spec) in m {
                    let p = kp.child(oname);
                    let Some(spec) = expect_object(spec, &p, errs) else {
                        continue;
                    };
                    if let Some(Value::Array(sels)) = spec.get(list_key) {
                        for (i, s) in sels.iter().enumerate() {
                            check_selector(s, p.child(list_key).index(i), errs);
                        }
                    }
                    if let Some(s) = spec.get("valueFromParameter") {
                        check_selector(s, p.child("valueFromParameter"), errs);
                    }
                    if let Some(Value::Object(oneof)) = spec.get("valueFromOneof")
                        && let Some(Value::Array(sels)) = oneof.get("parameterSelectors")
                    {
                        for (i, s) in sels.iter().enumerate() {
                            check_selector(
                                s,
                                p.child("valueFromOneof")
                                    .child("parameterSelectors")
                                    .index(i),
                                errs,
                            );
                        }
                    }
                }
            }
        }
    }
    refs
}

/// Finds one cycle in a directed graph (node -> successors), iteratively (Kahn's algorithm,
/// then a walk inside what is left). Returns the cycle as node names, first node repeated last.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    let mut indegree: HashMap<&str, usize> = HashMap::new();
    for (&n, succ) in edges {
        indegree.entry(n).or_default();
        for &s in succ {
            *indegree.entry(s).or_default() += 1;
        }
    }
    let mut ready: Vec<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    while let Some(n) = ready.pop() {
        indegree.remove(n);
        if let Some(succ) = edges.get(n) {
            for &s in succ {
                if let Some(d) = indegree.get_mut(s) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(s);
                    }
                }
            }
        }
    }
    // Every node left is on a cycle or downstream of one; follow successors that are left until
    // a node repeats.
    let start = indegree.keys().min().copied()?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut walk = vec![start];
    let mut current = start;
    loop {
        seen.insert(current, walk.len() - 1);
        let next = edges
            .get(current)
            .and_then(|succ| succ.iter().find(|s| indegree.contains_key(**s)))
            .copied()?;
        if let Some(&at) = seen.get(next) {
            let mut cycle = walk[at..].to_vec();
            cycle.push(next);
            return Some(cycle);
        }
        walk.push(next);
        current = next;
    }
}

/// Validates a `PlatformSpec` value against the pipeline spec it belongs to. Paths are relative
/// to the platform spec (`platforms.kubernetes...`).
pub fn validate_platform_spec(platform: &Value, pipeline_spec: &Value) -> ErrorList {
    let mut errs = ErrorList::new();
    let Some(obj) = expect_object(platform, &FieldPath::root(), &mut errs) else {
        return errs;
    };
    unknown_fields(
        obj,
        &[("platforms", "platforms")],
        &FieldPath::root(),
        &mut errs,
    );
    let path = FieldPath::new("platforms");
    let Some(platforms) = obj.get("platforms") else {
        errs.push(FieldError::required(
            path,
            "a platform spec holds platforms",
        ));
        return errs;
    };
    let Some(platforms) = expect_object(platforms, &path, &mut errs) else {
        return errs;
    };
    let executors: Option<BTreeSet<&str>> = pipeline_spec
        .as_object()
        .and_then(|o| field(Some(o), "deploymentSpec", "deployment_spec"))
        .and_then(|d| d.get("executors"))
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect());
    for (name, single) in platforms {
        let sp = path.child(name);
        let Some(single) = expect_object(single, &sp, &mut errs) else {
            continue;
        };
        if let Some(pc) = field(Some(single), "pipelineConfig", "pipeline_config") {
            expect_object(pc, &sp.child("pipelineConfig"), &mut errs);
        }
        let Some(ds) = field(Some(single), "deploymentSpec", "deployment_spec") else {
            continue;
        };
        let dp = sp.child("deploymentSpec");
        let Some(ds) = expect_object(ds, &dp, &mut errs) else {
            continue;
        };
        let Some(ex) = ds.get("executors") else {
            continue;
        };
        let ep = dp.child("executors");
        let Some(ex) = expect_object(ex, &ep, &mut errs) else {
            continue;
        };
        for (ename, config) in ex {
            let p = ep.child(ename);
            expect_object(config, &p, &mut errs);
            if !executors
                .as_ref()
                .is_some_and(|e| e.contains(ename.as_str()))
            {
                errs.push(FieldError::not_found(
                    p,
                    format!(
                        "executor \"{ename}\" is not defined in the pipeline spec's \
                         deploymentSpec.executors"
                    ),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "pipelineInfo": {"name": "p"},
            "schemaVersion": "2.1.0",
            "deploymentSpec": {"executors": {"exec-a": {"container": {"image": "x"}}}},
            "components": {"comp-a": {"executorLabel": "exec-a"}},
            "root": {"dag": {"tasks": {
                "a": {"componentRef": {"name": "comp-a"}, "taskInfo": {"name": "a"}},
                "b": {"componentRef": {"name": "comp-a"}, "dependentTasks": ["a"]}
            }}}
        })
    }

    fn messages(errs: &ErrorList) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn minimal_spec_is_valid() {
        assert_eq!(
            messages(&validate_pipeline_spec(&minimal())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn snake_case_keys_are_accepted() {
        let spec = json!({
            "pipeline_info": {"name": "p"},
            "schema_version": "2.1.0",
            "root": {"dag": {"tasks": {}}}
        });
        assert!(validate_pipeline_spec(&spec).is_empty());
    }

    #[test]
    fn task_cycle_is_reported_with_its_path() {
        let mut spec = minimal();
        spec["root"]["dag"]["tasks"]["a"]["dependentTasks"] = json!(["b"]);
        let msgs = messages(&validate_pipeline_spec(&spec));
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0]
                .starts_with("root.dag.tasks: tasks depend on each other in a cycle: a -> b -> a")
                || msgs[0].starts_with(
                    "root.dag.tasks: tasks depend on each other in a cycle: b -> a -> b"
                ),
            "{msgs:?}"
        );
    }

    #[test]
    fn self_dependency_is_reported() {
        let mut spec = minimal();
        spec["root"]["dag"]["tasks"]["a"]["dependentTasks"] = json!(["a"]);
        let msgs = messages(&validate_pipeline_spec(&spec));
        assert_eq!(msgs, vec!["root.dag.tasks.a: task \"a\" depends on itself"]);
    }

    #[test]
    fn component_cycle_is_reported() {
        let mut spec = minimal();
        spec["components"]["comp-x"] =
            json!({"dag": {"tasks": {"t": {"componentRef": {"name": "comp-y"}}}}});
        spec["components"]["comp-y"] =
            json!({"dag": {"tasks": {"t": {"componentRef": {"name": "comp-x"}}}}});
        let msgs = messages(&validate_pipeline_spec(&spec));
        assert_eq!(
            msgs,
            vec![
                "components: components reference each other in a cycle through their DAGs: comp-x -> comp-y -> comp-x"
            ]
        );
    }

    #[test]
    fn dangling_references_are_reported() {
        let mut spec = minimal();
        spec["components"]["comp-a"]["executorLabel"] = json!("exec-missing");
        spec["root"]["dag"]["tasks"]["b"]["componentRef"]["name"] = json!("comp-missing");
        spec["root"]["dag"]["tasks"]["b"]["inputs"] = json!({"parameters": {
            "x": {"taskOutputParameter": {"producerTask": "ghost", "outputParameterKey": "o"}},
            "y": {"componentInputParameter": "undeclared"}
        }});
        let msgs = messages(&validate_pipeline_spec(&spec));
        assert!(msgs.contains(&"components.comp-a.executorLabel: executor \"exec-missing\" is not defined in deploymentSpec.executors".to_owned()), "{msgs:?}");
        assert!(msgs.contains(&"root.dag.tasks.b.componentRef.name: component \"comp-missing\" is not defined in components".to_owned()), "{msgs:?}");
        assert!(msgs.contains(&"root.dag.tasks.b.inputs.parameters.x.taskOutputParameter.producerTask: task \"ghost\" does not exist in this DAG".to_owned()), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("root.dag.tasks.b.inputs.parameters.y.componentInputParameter: input parameter \"undeclared\"")), "{msgs:?}");
    }

    #[test]
    fn parameter_types_and_defaults() {
        let mut spec = minimal();
        spec["root"]["inputDefinitions"] = json!({"parameters": {
            "n": {"parameterType": "NUMBER_INTEGER", "defaultValue": 1.5},
            "s": {"parameterType": "STRINGG"},
            "ok": {"parameterType": 2, "defaultValue": 42.0}
        }});
        let msgs = messages(&validate_pipeline_spec(&spec));
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].starts_with("root.inputDefinitions.parameters.n.defaultValue: default value 1.5 does not match parameter type NUMBER_INTEGER"));
        assert!(msgs[1].starts_with(
            "root.inputDefinitions.parameters.s.parameterType: \"STRINGG\" is not a valid value"
        ));
    }

    #[test]
    fn wrong_types_never_panic() {
        for v in [json!(null), json!(1), json!([]), json!("x")] {
            let mut spec = minimal();
            spec["root"] = v.clone();
            assert!(!validate_pipeline_spec(&spec).is_empty());
            let mut spec = minimal();
            spec["components"] = v.clone();
            let _ = validate_pipeline_spec(&spec);
            let mut spec = minimal();
            spec["root"]["dag"]["tasks"]["a"] = v.clone();
            let _ = validate_pipeline_spec(&spec);
            let _ = validate_platform_spec(&v, &spec);
        }
    }

    #[test]
    fn platform_executors_must_exist() {
        let platform = json!({"platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-zzz": {}}}}}});
        let msgs = messages(&validate_platform_spec(&platform, &minimal()));
        assert_eq!(
            msgs,
            vec![
                "platforms.kubernetes.deploymentSpec.executors.exec-zzz: executor \"exec-zzz\" is not defined in the pipeline spec's deploymentSpec.executors"
            ]
        );
        let bad = json!({"platforms": {"kubernetes": {"deploymentSpec": "nope"}}});
        let msgs = messages(&validate_platform_spec(&bad, &minimal()));
        assert_eq!(
            msgs,
            vec!["platforms.kubernetes.deploymentSpec: must be a mapping, found a string"]
        );
    }

    #[test]
    fn file_level_errors_name_documents() {
        let err = parse_pipeline_file(b"- a\n- b\n").unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "document 1: must be a mapping (a KFP PipelineSpec), found a sequence"
        );
        let err = parse_pipeline_file(b"# nothing\n").unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "no pipeline spec found: the file holds no YAML document"
        );
        let text = serde_json::to_string(&minimal()).unwrap();
        let two = format!("{text}\n---\n{text}\n");
        let err = parse_pipeline_file(two.as_bytes()).unwrap_err();
        assert!(
            err[0]
                .to_string()
                .starts_with("multiple pipeline specs provided (documents 1, 2)")
        );
    }

    #[test]
    fn parsed_file_exposes_pipeline_info() {
        let mut spec = minimal();
        spec["pipelineInfo"]["displayName"] = json!("Nice");
        let parsed = parse_pipeline_file(serde_json::to_string(&spec).unwrap().as_bytes()).unwrap();
        assert_eq!(parsed.name, "p");
        assert_eq!(parsed.display_name.as_deref(), Some("Nice"));
        assert!(parsed.platform_spec.is_none());
    }

    #[test]
    fn size_limit_applies_to_json() {
        let big = json!({"x": "a".repeat(MAX_SPEC_JSON_BYTES)});
        assert!(check_size(&big, None).is_some());
        assert!(check_size(&minimal(), None).is_none());
    }
}
