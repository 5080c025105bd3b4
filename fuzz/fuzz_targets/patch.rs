//! JSON patch (bounded: ops, size) and merge patch on a document, both from the input: the first
//! half of the input is the document, the second the patch.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (doc, patch) = data.split_at(data.len() / 2);
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(doc) else {
        return;
    };
    if let Ok(p) = serde_json::from_slice::<json_patch::Patch>(patch) {
        let _ = kfp_apiserver::registry::bounded_json_patch(&doc, &p);
    }
    if let Ok(m) = serde_json::from_slice::<serde_json::Value>(patch) {
        let mut d = doc.clone();
        json_patch::merge(&mut d, &m);
    }
});
