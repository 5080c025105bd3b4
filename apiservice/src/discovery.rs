//! Discovery documents, generated from one table of the served resources: `/api`, `/apis`
//! (legacy `APIGroupList` and aggregated `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`),
//! `/apis/<group>` and `/apis/<group>/<version>`.
//!
//! Static data only: the aggregator probes these every 30 s and marks the whole API unavailable
//! if they fail, so nothing here may depend on the store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, APIVersions, GroupVersionForDiscovery,
};
use serde_json::{Value, json};

use crate::resource::RESOURCES;
use crate::types::{API_VERSION, GROUP, VERSION};

/// Verbs of every resource.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of the status subresource.
pub const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

/// `GET /api`: no legacy core group here, but kubectl needs the endpoint to exist.
pub fn api_versions() -> APIVersions {
    APIVersions {
        versions: Vec::new(),
        server_address_by_client_cidrs: Vec::new(),
    }
}

fn group_version() -> GroupVersionForDiscovery {
    GroupVersionForDiscovery {
        group_version: API_VERSION.to_owned(),
        version: VERSION.to_owned(),
    }
}

/// `GET /apis/pipelines.kubeflow.org`.
pub fn api_group() -> APIGroup {
    APIGroup {
        name: GROUP.to_owned(),
        versions: vec![group_version()],
        preferred_version: Some(group_version()),
        server_address_by_client_cidrs: None,
    }
}

/// `GET /apis` (legacy form).
pub fn api_group_list() -> APIGroupList {
    APIGroupList {
        groups: vec![api_group()],
    }
}

/// `GET /apis/pipelines.kubeflow.org/v2beta1`.
pub fn api_resource_list() -> APIResourceList {
    let mut resources = Vec::new();
    for r in RESOURCES {
        resources.push(APIResource {
            name: r.plural.to_owned(),
            singular_name: r.singular.to_owned(),
            namespaced: true,
            kind: r.kind.to_owned(),
            verbs: strings(VERBS),
            short_names: Some(strings(r.short_names)),
            categories: Some(strings(r.categories)),
            storage_version_hash: None,
            group: None,
            version: None,
        });
        if r.status_subresource {
            resources.push(APIResource {
                name: format!("{}/status", r.plural),
                singular_name: String::new(),
                namespaced: true,
                kind: r.kind.to_owned(),
                verbs: strings(STATUS_VERBS),
                short_names: None,
                categories: None,
                storage_version_hash: None,
                group: None,
                version: None,
            });
        }
    }
    APIResourceList {
        group_version: API_VERSION.to_owned(),
        resources,
    }
}

/// `GET /apis` with `Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`.
/// k8s-openapi has no apidiscovery types, so the document is built here from [`RESOURCES`].
pub fn aggregated_discovery() -> Value {
    let gvk = |kind: &str| json!({"group": GROUP, "version": VERSION, "kind": kind});
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|r| {
            let mut v = json!({
                "resource": r.plural,
                "responseKind": gvk(r.kind),
                "scope": "Namespaced",
                "singularResource": r.singular,
                "verbs": VERBS,
                "shortNames": r.short_names,
                "categories": r.categories,
            });
            if r.status_subresource {
                v["subresources"] = json!([{
                    "subresource": "status",
                    "responseKind": gvk(r.kind),
                    "verbs": STATUS_VERBS,
                }]);
            }
            v
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP, "creationTimestamp": null},
            "versions": [{
                "version": VERSION,
                "resources": resources,
                "freshness": "Current",
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_list_has_status_subresource_and_short_names() {
        let list = serde_json::to_value(api_resource_list()).unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["pipelines", "pipelineversions", "pipelineversions/status"]
        );
        assert_eq!(list["resources"][1]["shortNames"][0], "plv");
        assert_eq!(list["resources"][0]["categories"][0], "kubeflow");
        assert_eq!(list["resources"][0]["verbs"].as_array().unwrap().len(), 8);
    }

    #[test]
    fn aggregated_discovery_is_v2_with_response_kinds() {
        let d = aggregated_discovery();
        assert_eq!(d["apiVersion"], "apidiscovery.k8s.io/v2");
        let r = &d["items"][0]["versions"][0]["resources"][1];
        assert_eq!(r["responseKind"]["kind"], "PipelineVersion");
        assert_eq!(r["responseKind"]["group"], GROUP);
        assert_eq!(r["subresources"][0]["subresource"], "status");
    }
}
