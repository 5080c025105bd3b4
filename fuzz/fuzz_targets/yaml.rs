//! Request and file YAML: the depth pre-scan, libyaml, duplicate handling — never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kfp_apiservice::yaml::read_documents(data);
    let _ = kfp_apiservice::yaml::read_documents_reporting_duplicates(data);
});
