//! `kfp-apiserver validate FILE...`: the server's own rules (`kfp_apiservice`), run offline.
//! Output is one line per problem, `FILE: document N: field.path: what is wrong`, or `FILE: ok`.

use std::io::Write;
use std::path::Path;

use kfp_apiservice::{ir, manifest};

use crate::options::{FileKind, ValidateOptions};

/// Checks one file's bytes; returns the lines to print and whether it is valid.
pub fn check_file(name: &str, bytes: &[u8], kind: FileKind) -> (Vec<String>, bool) {
    let as_manifest = match kind {
        FileKind::Ir => false,
        FileKind::Manifest => true,
        FileKind::Auto => match manifest::read(bytes) {
            Ok(docs) => manifest::looks_like_manifest(&docs),
            Err(_) => false,
        },
    };
    if !as_manifest {
        return match ir::parse_pipeline_file(bytes) {
            Ok(p) => (
                vec![format!(
                    "{name}: ok (pipeline \"{}\"{})",
                    p.name,
                    if p.platform_spec.is_some() {
                        ", with a kubernetes platform spec"
                    } else {
                        ""
                    }
                )],
                true,
            ),
            Err(errs) => (errs.iter().map(|e| format!("{name}: {e}")).collect(), false),
        };
    }
    let docs = match manifest::read(bytes) {
        Ok(d) => d,
        Err(errs) => return (errs.iter().map(|e| format!("{name}: {e}")).collect(), false),
    };
    let report = manifest::validate_documents(&docs);
    let mut lines: Vec<String> = report
        .errors
        .iter()
        .map(|e| format!("{name}: {e}"))
        .collect();
    let ok = report.errors.is_empty();
    if ok {
        let n = report.objects.len();
        let mut summary = format!("{name}: ok ({n} object{}", if n == 1 { "" } else { "s" });
        if report.skipped > 0 {
            summary.push_str(&format!(", {} of other kinds skipped", report.skipped));
        }
        summary.push(')');
        lines.push(summary);
    }
    lines.extend(report.notes.iter().map(|n| format!("{name}: note: {n}")));
    (lines, ok)
}

/// Runs the subcommand; returns the process exit code.
pub fn run(opts: &ValidateOptions, out: &mut dyn Write) -> i32 {
    let mut all_ok = true;
    for path in &opts.files {
        let name = path.display().to_string();
        let (lines, ok) = match read(path) {
            Ok(bytes) => check_file(&name, &bytes, opts.kind),
            Err(e) => (vec![format!("{name}: {e}")], false),
        };
        all_ok &= ok;
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    if all_ok { 0 } else { 1 }
}

/// Reads a file of at most 32 MiB (checked before reading).
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > kfp_apiservice::yaml::MAX_FILE_BYTES as u64 {
        return Err(std::io::Error::other(format!(
            "file is {} bytes; the limit is {} bytes (32 MiB)",
            meta.len(),
            kfp_apiservice::yaml::MAX_FILE_BYTES
        )));
    }
    std::fs::read(path)
}
