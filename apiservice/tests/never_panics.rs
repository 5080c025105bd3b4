//! Property tests: no input makes the file readers or validators panic, whether random bytes or
//! corpus files with random edits (bytes flipped, spans deleted or duplicated, truncation).

use std::path::Path;

use kfp_apiservice::{ir, manifest};
use proptest::prelude::*;

fn corpus_files() -> Vec<Vec<u8>> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let mut out = Vec::new();
    for dir in [base.clone(), base.join("k8s"), base.join("invalid")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let small = p.metadata().map(|m| m.len() < 64 * 1024).unwrap_or(false);
            if p.extension().is_some_and(|x| x == "yaml") && small {
                out.push(std::fs::read(p).unwrap());
            }
        }
    }
    assert!(out.len() > 20);
    out
}

fn check(bytes: &[u8]) {
    let _ = ir::parse_pipeline_file(bytes);
    if let Ok(docs) = manifest::read(bytes) {
        let _ = manifest::validate_documents(&docs);
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), 0usize..200).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 0usize..200).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match *e {
            Edit::Flip(i, b) => bytes[i % len] = b,
            Edit::Delete(i, n) => {
                let start = i % len;
                let end = (start + n).min(len);
                bytes.drain(start..end);
            }
            Edit::Duplicate(i, n) => {
                let start = i % len;
                let end = (start + n).min(len);
                let span = bytes[start..end].to_vec();
                bytes.splice(end..end, span);
            }
            Edit::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn random_yamlish_text_never_panics(text in "[-:{}\\[\\]&*!|> \n\ta-z0-9#'\"]{0,400}") {
        check(text.as_bytes());
    }

    #[test]
    fn mutated_corpus_files_never_panic(index in any::<usize>(), edits in proptest::collection::vec(edit(), 1..6)) {
        let files = corpus_files();
        let original = files[index % files.len()].clone();
        check(&apply(original, &edits));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(ir::parse_pipeline_file(deep.as_bytes()).is_err());
    let deep_yaml = "a:\n".to_owned() + &"- ".repeat(50_000) + "x\n";
    assert!(ir::parse_pipeline_file(deep_yaml.as_bytes()).is_err());
}
