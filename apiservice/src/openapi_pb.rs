//! The OpenAPI v2 document in protobuf: gnostic's `openapi.v2.Document` message (the encoding
//! kube-apiserver serves for `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`,
//! which client-go's `OpenAPISchema()` — Argo CD's diffing, kubectl's v2 fallback — asks for and
//! decodes with `proto.Unmarshal`). Converted from the JSON document [`crate::openapi::v2`]
//! produces, as kube-openapi's `ToProtoBinary` does through gnostic; vendor extensions carry
//! their value as YAML text (`Any.yaml`), as gnostic writes them.
//!
//! Only the messages and fields this server's document uses are declared; the tags are
//! gnostic's (`openapiv2/OpenAPIv2.proto`). A JSON key this module does not know is an error,
//! never silently dropped.

use serde_json::{Map, Value};

/// The media type of the protobuf document.
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// gnostic's messages, as far as this server uses them.
#[allow(missing_docs)]
pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "2")]
        pub info: Option<Info>,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Info {
        #[prost(string, tag = "1")]
        pub title: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, tag = "3")]
        pub description: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {
        #[prost(message, repeated, tag = "1")]
        pub vendor_extension: Vec<NamedAny>,
        #[prost(message, repeated, tag = "2")]
        pub path: Vec<NamedPathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedPathItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<PathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathItem {
        #[prost(message, optional, tag = "2")]
        pub get: Option<Operation>,
        #[prost(message, optional, tag = "3")]
        pub put: Option<Operation>,
        #[prost(message, optional, tag = "4")]
        pub post: Option<Operation>,
        #[prost(message, optional, tag = "5")]
        pub delete: Option<Operation>,
        #[prost(message, optional, tag = "8")]
        pub patch: Option<Operation>,
        #[prost(message, repeated, tag = "9")]
        pub parameters: Vec<ParametersItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Operation {
        #[prost(string, repeated, tag = "1")]
        pub tags: Vec<String>,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "5")]
        pub operation_id: String,
        #[prost(string, repeated, tag = "6")]
        pub produces: Vec<String>,
        #[prost(string, repeated, tag = "7")]
        pub consumes: Vec<String>,
        #[prost(message, repeated, tag = "8")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, optional, tag = "9")]
        pub responses: Option<Responses>,
        #[prost(message, repeated, tag = "13")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParametersItem {
        #[prost(oneof = "parameters_item::Oneof", tags = "1")]
        pub oneof: Option<parameters_item::Oneof>,
    }

    pub mod parameters_item {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            Parameter(super::Parameter),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
        pub oneof: Option<parameter::Oneof>,
    }

    pub mod parameter {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            BodyParameter(super::BodyParameter),
            #[prost(message, tag = "2")]
            NonBodyParameter(super::NonBodyParameter),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BodyParameter {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub r#in: String,
        #[prost(bool, tag = "4")]
        pub required: bool,
        #[prost(message, optional, tag = "5")]
        pub schema: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NonBodyParameter {
        #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
        pub oneof: Option<non_body_parameter::Oneof>,
    }

    pub mod non_body_parameter {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "3")]
            QueryParameterSubSchema(super::QueryParameterSubSchema),
            #[prost(message, tag = "4")]
            PathParameterSubSchema(super::PathParameterSubSchema),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "6")]
        pub r#type: String,
        #[prost(bool, tag = "20")]
        pub unique_items: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "5")]
        pub r#type: String,
        #[prost(bool, tag = "19")]
        pub unique_items: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Responses {
        #[prost(message, repeated, tag = "1")]
        pub response_code: Vec<NamedResponseValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedResponseValue {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<ResponseValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseValue {
        #[prost(oneof = "response_value::Oneof", tags = "1")]
        pub oneof: Option<response_value::Oneof>,
    }

    pub mod response_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            Response(super::Response),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(message, optional, tag = "2")]
        pub schema: Option<SchemaItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchemaItem {
        #[prost(oneof = "schema_item::Oneof", tags = "1")]
        pub oneof: Option<schema_item::Oneof>,
    }

    pub mod schema_item {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, tag = "1")]
            Schema(super::Schema),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, boxed, tag = "2")]
        pub value: Option<Box<Schema>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "1")]
        pub r#ref: String,
        #[prost(string, tag = "2")]
        pub format: String,
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(string, repeated, tag = "19")]
        pub required: Vec<String>,
        #[prost(message, optional, boxed, tag = "21")]
        pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
        #[prost(message, optional, tag = "22")]
        pub r#type: Option<TypeItem>,
        #[prost(message, optional, tag = "23")]
        pub items: Option<ItemsItem>,
        #[prost(message, repeated, tag = "24")]
        pub all_of: Vec<Schema>,
        #[prost(message, optional, tag = "25")]
        pub properties: Option<Properties>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AdditionalPropertiesItem {
        #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
        pub oneof: Option<additional_properties_item::Oneof>,
    }

    pub mod additional_properties_item {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Oneof {
            #[prost(message, boxed, tag = "1")]
            Schema(Box<super::Schema>),
            #[prost(bool, tag = "2")]
            Boolean(bool),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemsItem {
        #[prost(message, repeated, tag = "1")]
        pub schema: Vec<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Properties {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "2")]
        pub yaml: String,
    }
}

/// Why a JSON document could not be expressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OpenAPI v2 to protobuf: {0}")]
pub struct ConvertError(String);

type R<T> = Result<T, ConvertError>;

fn err<T>(m: impl Into<String>) -> R<T> {
    Err(ConvertError(m.into()))
}

fn obj<'a>(v: &'a Value, at: &str) -> R<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| ConvertError(format!("{at}: not an object")))
}

fn text(v: &Value, at: &str) -> R<String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| ConvertError(format!("{at}: not a string")))
}

fn texts(v: &Value, at: &str) -> R<Vec<String>> {
    v.as_array()
        .ok_or_else(|| ConvertError(format!("{at}: not a list")))?
        .iter()
        .map(|x| text(x, at))
        .collect()
}

fn flag(v: &Value, at: &str) -> R<bool> {
    v.as_bool()
        .ok_or_else(|| ConvertError(format!("{at}: not a boolean")))
}

/// A vendor extension: its value as YAML, as gnostic stores it.
fn extension(name: &str, v: &Value) -> R<pb::NamedAny> {
    let yaml = serde_norway::to_string(v).map_err(|e| ConvertError(format!("{name}: {e}")))?;
    Ok(pb::NamedAny {
        name: name.to_owned(),
        value: Some(pb::Any { yaml }),
    })
}

fn schema(v: &Value, at: &str) -> R<pb::Schema> {
    let mut s = pb::Schema::default();
    for (k, x) in obj(v, at)? {
        let here = format!("{at}.{k}");
        match k.as_str() {
            "$ref" => s.r#ref = text(x, &here)?,
            "format" => s.format = text(x, &here)?,
            "description" => s.description = text(x, &here)?,
            "required" => s.required = texts(x, &here)?,
            "type" => {
                s.r#type = Some(pb::TypeItem {
                    value: vec![text(x, &here)?],
                })
            }
            "items" => {
                s.items = Some(pb::ItemsItem {
                    schema: vec![schema(x, &here)?],
                })
            }
            "allOf" => {
                s.all_of = x
                    .as_array()
                    .ok_or_else(|| ConvertError(format!("{here}: not a list")))?
                    .iter()
                    .map(|y| schema(y, &here))
                    .collect::<R<_>>()?
            }
            "properties" => {
                s.properties = Some(pb::Properties {
                    additional_properties: named_schemas(x, &here)?,
                })
            }
            "additionalProperties" => {
                let one = match x {
                    Value::Bool(b) => pb::additional_properties_item::Oneof::Boolean(*b),
                    other => pb::additional_properties_item::Oneof::Schema(Box::new(schema(
                        other, &here,
                    )?)),
                };
                s.additional_properties =
                    Some(Box::new(pb::AdditionalPropertiesItem { oneof: Some(one) }));
            }
            ext if ext.starts_with("x-") => s.vendor_extension.push(extension(ext, x)?),
            _ => return err(format!("{here}: not supported")),
        }
    }
    Ok(s)
}

fn named_schemas(v: &Value, at: &str) -> R<Vec<pb::NamedSchema>> {
    obj(v, at)?
        .iter()
        .map(|(name, x)| {
            Ok(pb::NamedSchema {
                name: name.clone(),
                value: Some(Box::new(schema(x, &format!("{at}.{name}"))?)),
            })
        })
        .collect()
}

fn parameter(v: &Value, at: &str) -> R<pb::ParametersItem> {
    let m = obj(v, at)?;
    let get = |k: &str| m.get(k);
    let s = |k: &str| get(k).map(|x| text(x, &format!("{at}.{k}"))).transpose();
    let b = |k: &str| get(k).map(|x| flag(x, &format!("{at}.{k}"))).transpose();
    let known = [
        "in",
        "name",
        "description",
        "required",
        "type",
        "uniqueItems",
        "schema",
    ];
    if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
        return err(format!("{at}.{k}: not supported"));
    }
    let location = s("in")?.unwrap_or_default();
    let name = s("name")?.unwrap_or_default();
    let description = s("description")?.unwrap_or_default();
    let required = b("required")?.unwrap_or(false);
    let kind = s("type")?.unwrap_or_default();
    let unique_items = b("uniqueItems")?.unwrap_or(false);
    use pb::non_body_parameter::Oneof as NonBody;
    use pb::parameter::Oneof as P;
    let p = match location.as_str() {
        "body" => P::BodyParameter(pb::BodyParameter {
            description,
            name,
            r#in: location,
            required,
            schema: get("schema")
                .map(|x| schema(x, &format!("{at}.schema")))
                .transpose()?,
        }),
        "query" => P::NonBodyParameter(pb::NonBodyParameter {
            oneof: Some(NonBody::QueryParameterSubSchema(
                pb::QueryParameterSubSchema {
                    required,
                    r#in: location,
                    description,
                    name,
                    r#type: kind,
                    unique_items,
                },
            )),
        }),
        "path" => P::NonBodyParameter(pb::NonBodyParameter {
            oneof: Some(NonBody::PathParameterSubSchema(
                pb::PathParameterSubSchema {
                    required,
                    r#in: location,
                    description,
                    name,
                    r#type: kind,
                    unique_items,
                },
            )),
        }),
        other => return err(format!("{at}.in: {other:?} not supported")),
    };
    Ok(pb::ParametersItem {
        oneof: Some(pb::parameters_item::Oneof::Parameter(pb::Parameter {
            oneof: Some(p),
        })),
    })
}

fn parameters(v: &Value, at: &str) -> R<Vec<pb::ParametersItem>> {
    v.as_array()
        .ok_or_else(|| ConvertError(format!("{at}: not a list")))?
        .iter()
        .enumerate()
        .map(|(i, p)| parameter(p, &format!("{at}[{i}]")))
        .collect()
}

fn operation(v: &Value, at: &str) -> R<pb::Operation> {
    let mut op = pb::Operation::default();
    for (k, x) in obj(v, at)? {
        let here = format!("{at}.{k}");
        match k.as_str() {
            "tags" => op.tags = texts(x, &here)?,
            "description" => op.description = text(x, &here)?,
            "operationId" => op.operation_id = text(x, &here)?,
            "produces" => op.produces = texts(x, &here)?,
            "consumes" => op.consumes = texts(x, &here)?,
            "parameters" => op.parameters = parameters(x, &here)?,
            "responses" => {
                let mut codes = Vec::new();
                for (code, r) in obj(x, &here)? {
                    let rat = format!("{here}.{code}");
                    let mut resp = pb::Response::default();
                    for (rk, rv) in obj(r, &rat)? {
                        match rk.as_str() {
                            "description" => resp.description = text(rv, &rat)?,
                            "schema" => {
                                resp.schema = Some(pb::SchemaItem {
                                    oneof: Some(pb::schema_item::Oneof::Schema(schema(rv, &rat)?)),
                                })
                            }
                            other => return err(format!("{rat}.{other}: not supported")),
                        }
                    }
                    codes.push(pb::NamedResponseValue {
                        name: code.clone(),
                        value: Some(pb::ResponseValue {
                            oneof: Some(pb::response_value::Oneof::Response(resp)),
                        }),
                    });
                }
                op.responses = Some(pb::Responses {
                    response_code: codes,
                });
            }
            ext if ext.starts_with("x-") => op.vendor_extension.push(extension(ext, x)?),
            _ => return err(format!("{here}: not supported")),
        }
    }
    Ok(op)
}

/// Converts an OpenAPI v2 JSON document into gnostic's `Document` message.
pub fn document(v: &Value) -> R<pb::Document> {
    let mut d = pb::Document::default();
    for (k, x) in obj(v, "document")? {
        match k.as_str() {
            "swagger" => d.swagger = text(x, k)?,
            "info" => {
                let mut info = pb::Info::default();
                for (ik, iv) in obj(x, k)? {
                    match ik.as_str() {
                        "title" => info.title = text(iv, ik)?,
                        "version" => info.version = text(iv, ik)?,
                        "description" => info.description = text(iv, ik)?,
                        other => return err(format!("info.{other}: not supported")),
                    }
                }
                d.info = Some(info);
            }
            "paths" => {
                let mut paths = pb::Paths::default();
                for (p, item) in obj(x, k)? {
                    let at = format!("paths.{p}");
                    let mut pi = pb::PathItem::default();
                    for (m, op) in obj(item, &at)? {
                        let here = format!("{at}.{m}");
                        match m.as_str() {
                            "get" => pi.get = Some(operation(op, &here)?),
                            "put" => pi.put = Some(operation(op, &here)?),
                            "post" => pi.post = Some(operation(op, &here)?),
                            "delete" => pi.delete = Some(operation(op, &here)?),
                            "patch" => pi.patch = Some(operation(op, &here)?),
                            "parameters" => pi.parameters = parameters(op, &here)?,
                            _ => return err(format!("{here}: not supported")),
                        }
                    }
                    paths.path.push(pb::NamedPathItem {
                        name: p.clone(),
                        value: Some(pi),
                    });
                }
                d.paths = Some(paths);
            }
            "definitions" => {
                d.definitions = Some(pb::Definitions {
                    additional_properties: named_schemas(x, k)?,
                })
            }
            other => return err(format!("{other}: not supported")),
        }
    }
    Ok(d)
}

/// The protobuf bytes of an OpenAPI v2 JSON document.
pub fn encode(v: &Value) -> R<Vec<u8>> {
    use prost::Message;
    Ok(document(v)?.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::json;

    // The reverse mapping, written independently of the forward one, for the round trip.
    fn ext_json(exts: &[pb::NamedAny], into: &mut Map<String, Value>) {
        for e in exts {
            let yaml = e.value.as_ref().map(|a| a.yaml.as_str()).unwrap_or("");
            into.insert(e.name.clone(), serde_norway::from_str(yaml).unwrap());
        }
    }

    fn schema_json(s: &pb::Schema) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        };
        put("$ref", &s.r#ref);
        put("format", &s.format);
        put("description", &s.description);
        if !s.required.is_empty() {
            m.insert("required".into(), json!(s.required));
        }
        if let Some(t) = &s.r#type {
            m.insert("type".into(), json!(t.value[0]));
        }
        if let Some(i) = &s.items {
            m.insert("items".into(), schema_json(&i.schema[0]));
        }
        if !s.all_of.is_empty() {
            m.insert(
                "allOf".into(),
                Value::Array(s.all_of.iter().map(schema_json).collect()),
            );
        }
        if let Some(p) = &s.properties {
            m.insert("properties".into(), named_json(&p.additional_properties));
        }
        if let Some(ap) = &s.additional_properties {
            let v = match &ap.oneof {
                Some(pb::additional_properties_item::Oneof::Schema(x)) => schema_json(x),
                Some(pb::additional_properties_item::Oneof::Boolean(b)) => json!(b),
                None => Value::Null,
            };
            m.insert("additionalProperties".into(), v);
        }
        ext_json(&s.vendor_extension, &mut m);
        Value::Object(m)
    }

    fn named_json(list: &[pb::NamedSchema]) -> Value {
        Value::Object(
            list.iter()
                .map(|n| (n.name.clone(), schema_json(n.value.as_deref().unwrap())))
                .collect(),
        )
    }

    fn param_json(p: &pb::ParametersItem) -> Value {
        let Some(pb::parameters_item::Oneof::Parameter(p)) = &p.oneof else {
            panic!("a parameter")
        };
        let (location, name, description, required, kind, unique) = match &p.oneof {
            Some(pb::parameter::Oneof::NonBodyParameter(nb)) => match &nb.oneof {
                Some(pb::non_body_parameter::Oneof::QueryParameterSubSchema(q)) => (
                    &q.r#in,
                    &q.name,
                    &q.description,
                    q.required,
                    &q.r#type,
                    q.unique_items,
                ),
                Some(pb::non_body_parameter::Oneof::PathParameterSubSchema(q)) => (
                    &q.r#in,
                    &q.name,
                    &q.description,
                    q.required,
                    &q.r#type,
                    q.unique_items,
                ),
                None => panic!("empty"),
            },
            other => panic!("unexpected {other:?}"),
        };
        let mut m = Map::new();
        m.insert("in".into(), json!(location));
        m.insert("name".into(), json!(name));
        if !description.is_empty() {
            m.insert("description".into(), json!(description));
        }
        if required {
            m.insert("required".into(), json!(true));
        }
        if !kind.is_empty() {
            m.insert("type".into(), json!(kind));
        }
        if unique {
            m.insert("uniqueItems".into(), json!(true));
        }
        Value::Object(m)
    }

    fn op_json(o: &pb::Operation) -> Value {
        let mut m = Map::new();
        if !o.tags.is_empty() {
            m.insert("tags".into(), json!(o.tags));
        }
        if !o.description.is_empty() {
            m.insert("description".into(), json!(o.description));
        }
        m.insert("operationId".into(), json!(o.operation_id));
        for (k, v) in [("produces", &o.produces), ("consumes", &o.consumes)] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        if !o.parameters.is_empty() {
            m.insert(
                "parameters".into(),
                Value::Array(o.parameters.iter().map(param_json).collect()),
            );
        }
        let mut responses = Map::new();
        for r in &o.responses.as_ref().unwrap().response_code {
            let Some(pb::response_value::Oneof::Response(resp)) = &r.value.as_ref().unwrap().oneof
            else {
                panic!("a response")
            };
            let mut rm = Map::new();
            rm.insert("description".into(), json!(resp.description));
            if let Some(pb::SchemaItem {
                oneof: Some(pb::schema_item::Oneof::Schema(s)),
            }) = &resp.schema
            {
                rm.insert("schema".into(), schema_json(s));
            }
            responses.insert(r.name.clone(), Value::Object(rm));
        }
        m.insert("responses".into(), Value::Object(responses));
        ext_json(&o.vendor_extension, &mut m);
        Value::Object(m)
    }

    fn document_json(d: &pb::Document) -> Value {
        let info = d.info.as_ref().unwrap();
        let mut paths = Map::new();
        for p in &d.paths.as_ref().unwrap().path {
            let pi = p.value.as_ref().unwrap();
            let mut m = Map::new();
            for (k, op) in [
                ("get", &pi.get),
                ("put", &pi.put),
                ("post", &pi.post),
                ("delete", &pi.delete),
                ("patch", &pi.patch),
            ] {
                if let Some(op) = op {
                    m.insert(k.into(), op_json(op));
                }
            }
            if !pi.parameters.is_empty() {
                m.insert(
                    "parameters".into(),
                    Value::Array(pi.parameters.iter().map(param_json).collect()),
                );
            }
            paths.insert(p.name.clone(), Value::Object(m));
        }
        json!({
            "swagger": d.swagger,
            "info": {"title": info.title, "version": info.version},
            "paths": paths,
            "definitions": named_json(&d.definitions.as_ref().unwrap().additional_properties),
        })
    }

    #[test]
    fn the_served_document_decodes_back_to_the_json_document() {
        let json_doc = crate::openapi::v2();
        let bytes = encode(&json_doc).unwrap();
        let decoded = pb::Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(document_json(&decoded), json_doc);
    }

    /// Wire bytes of a small document, worked out by hand from gnostic's field numbers
    /// (Document.swagger = 1, .definitions = 9; NamedSchema.name = 1, .value = 2; Schema.type =
    /// 22, .properties = 25, .vendor_extension = 31; TypeItem.value = 1; NamedAny.name = 1,
    /// .value = 2; Any.yaml = 2), so a wrong tag cannot pass the round trip unnoticed.
    #[test]
    fn field_numbers_are_gnostics() {
        let doc = json!({"swagger": "2.0", "definitions": {"A": {"type": "object",
            "x-kubernetes-map-type": "atomic"}}});
        let got = encode(&doc).unwrap();
        let ext_name = b"x-kubernetes-map-type";
        let mut any = vec![0x12, 7];
        any.extend_from_slice(b"atomic\n");
        let mut named_any = vec![0x0a, ext_name.len() as u8];
        named_any.extend_from_slice(ext_name);
        named_any.push(0x12);
        named_any.push(any.len() as u8);
        named_any.extend_from_slice(&any);
        let mut type_item = vec![0x0a, 6];
        type_item.extend_from_slice(b"object");
        // Schema: type (22 -> key 0xb2 0x01), vendor_extension (31 -> key 0xfa 0x01).
        let mut schema = vec![0xb2, 0x01, type_item.len() as u8];
        schema.extend_from_slice(&type_item);
        schema.extend_from_slice(&[0xfa, 0x01, named_any.len() as u8]);
        schema.extend_from_slice(&named_any);
        let mut named_schema = vec![0x0a, 1, b'A', 0x12, schema.len() as u8];
        named_schema.extend_from_slice(&schema);
        let mut definitions = vec![0x0a, named_schema.len() as u8];
        definitions.extend_from_slice(&named_schema);
        let mut want = vec![0x0a, 3];
        want.extend_from_slice(b"2.0");
        want.push(0x4a);
        want.push(definitions.len() as u8);
        want.extend_from_slice(&definitions);
        assert_eq!(got, want);
    }

    #[test]
    fn unknown_keys_are_errors_not_dropped() {
        let e = encode(&json!({"swagger": "2.0", "definitions": {"A": {"enum": ["x"]}}}));
        assert!(e.unwrap_err().to_string().contains("definitions.A.enum"));
    }
}
