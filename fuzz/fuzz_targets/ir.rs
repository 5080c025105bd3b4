//! The pipeline-spec (IR) validator on any JSON value and any pipeline file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kfp_apiservice::ir::parse_pipeline_file(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = kfp_apiservice::ir::validate_pipeline_spec(&v);
        let _ = kfp_apiservice::ir::validate_platform_spec(&v, &v);
        let _ = kfp_apiservice::ir::check_size(&v, Some(&v));
    }
});
