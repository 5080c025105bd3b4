//! JSON bodies: duplicate-reporting parse, then typed decoding of both kinds in every mode.
#![no_main]
use kfp_apiservice::decode::{FieldValidation, decode_value};
use kfp_apiservice::{Pipeline, PipelineVersion};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((value, _)) = kfp_apiservice::yaml::json_reporting_duplicates(data) {
        for mode in [
            FieldValidation::Strict,
            FieldValidation::Warn,
            FieldValidation::Ignore,
        ] {
            let _ = decode_value::<Pipeline>(value.clone(), "Pipeline", mode);
            let _ = decode_value::<PipelineVersion>(value.clone(), "PipelineVersion", mode);
        }
    }
});
