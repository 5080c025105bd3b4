//! Opening this server's store: the backend its URL names (`kfp_storage::open`, the one registry
//! of backends), indexing each resource as the resource table says ([`TableIndexer`]), and how a
//! field selector's paths map onto the store's columns. Nothing else in the server knows which
//! JSON field fills which index column.

use std::sync::Arc;

use kfp_apiservice::resource::Resource;
use kfp_storage::selector::Field;
use kfp_storage::{IndexColumn, Indexed, Indexer, StoreConfig};
use serde_json::Value;

/// Fills the store's generic index columns from the resource table's [`kfp_apiservice::resource::Index`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TableIndexer;

impl Indexer for TableIndexer {
    fn index(&self, resource: &str, object: &Value) -> Indexed {
        let Some(res) = Resource::by_plural(resource) else {
            return Indexed::default();
        };
        let v = res.index.values(object);
        Indexed {
            title: v.title,
            parent_name: v.parent_name,
            parent_uid: v.parent_uid,
            alias: v.alias,
            detail: v.detail,
            terms: v.terms,
        }
    }
}

/// Store settings for `url` with this server's indexer (and otherwise the store's defaults).
pub fn config(url: &str) -> StoreConfig {
    let mut c = StoreConfig::new(url);
    c.indexer = Arc::new(TableIndexer);
    c.kinds = envelope_kinds();
    c
}

/// The kube:// store's envelope kind of every resource: its kind + `Record`, same plural.
pub fn envelope_kinds() -> std::collections::BTreeMap<String, String> {
    kfp_apiservice::resource::RESOURCES
        .iter()
        .map(|r| (r.plural.to_owned(), format!("{}Record", r.kind)))
        .collect()
}

/// What each of a resource's selectable fields compares in the store.
pub fn selectable_fields(res: &Resource) -> Vec<(&'static str, Field)> {
    res.selectable_fields
        .iter()
        .filter_map(|&path| {
            let field = match path {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                _ if res.index.title == [path] => Field::Indexed(IndexColumn::Title),
                _ if res.index.parent_name == Some(path) => Field::Indexed(IndexColumn::ParentName),
                _ => return None,
            };
            Some((path, field))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfp_apiservice::resource::RESOURCES;

    #[test]
    fn every_selectable_field_runs_in_the_store() {
        for res in RESOURCES {
            let fields = selectable_fields(res);
            assert_eq!(fields.len(), res.selectable_fields.len(), "{}", res.plural);
        }
        let versions = Resource::by_plural("pipelineversions").unwrap();
        assert!(
            selectable_fields(versions)
                .contains(&("spec.pipelineName", Field::Indexed(IndexColumn::ParentName)))
        );
    }

    #[test]
    fn the_indexer_follows_the_table_and_ignores_unknown_resources() {
        let v = serde_json::json!({"metadata": {"name": "p-v"},
            "spec": {"displayName": "D", "pipelineName": "p", "description": "d",
                     "tags": {"team": "ml", "n": 1}}});
        let got = TableIndexer.index("pipelineversions", &v);
        assert_eq!((got.title.as_str(), got.parent_name.as_str()), ("D", "p"));
        assert_eq!((got.alias.as_str(), got.detail.as_str()), ("p-v", "d"));
        assert_eq!(got.terms.len(), 1, "only string tags are terms");
        let bare = serde_json::json!({"metadata": {"name": "p-v"}, "spec": {"versionName": "v"}});
        let got = TableIndexer.index("pipelineversions", &bare);
        assert_eq!(
            (got.title.as_str(), got.alias.as_str()),
            ("v", "v"),
            "the KFP view's fallbacks"
        );
        assert_eq!(TableIndexer.index("nothings", &v), Indexed::default());
    }
}
