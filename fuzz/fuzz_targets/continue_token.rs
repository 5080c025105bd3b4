//! Continue tokens come from clients: decoding any string is an error or a token, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = kfp_storage::token::ContinueToken::decode(s) {
            let _ = kfp_storage::token::ContinueToken::decode(&t.encode());
        }
    }
});
