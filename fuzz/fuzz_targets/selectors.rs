//! Label and field selectors: parse, then match against labels made from the same input.
#![no_main]
use std::collections::BTreeMap;

use kfp_storage::selector::Field;
use kfp_storage::{FieldSelector, IndexColumn, LabelSelector};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = LabelSelector::parse(s) {
        let labels: BTreeMap<String, String> = s
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let _ = sel.matches(&labels);
    }
    let allowed = [
        ("metadata.name", Field::Name),
        ("metadata.namespace", Field::Namespace),
        ("spec.pipelineName", Field::Indexed(IndexColumn::ParentName)),
    ];
    if let Ok(f) = FieldSelector::parse(s, &allowed) {
        let _ = f.matches(|_| Some(s.to_owned()));
    }
});
