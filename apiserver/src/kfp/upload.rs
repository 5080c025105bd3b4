//! The pipeline file of an upload (`shared/kfp/KFP_REST_FACTS.md` section 4): the multipart
//! part `uploadfile`, and inside it — by the part's file name — YAML or JSON taken as it is, or
//! by content a zip or gzip tarball holding `pipeline.yaml` (else its first member, which must be
//! `.yaml`/`.yml`). Every read is bounded: 32 MiB for the file and for any member once
//! decompressed (a zip or gzip bomb stops there), and a bounded number of archive members.
//!
//! It returns bytes for `kfp_apiservice::ir::parse_pipeline_file`; it validates nothing else.

use std::io::Read;

use bytes::Bytes;

use super::error::KfpError;

/// KFP's largest pipeline file (`MaxFileLength`).
pub const MAX_FILE_BYTES: usize = 32 << 20;
/// The multipart envelope around the file (headers, boundaries, other small fields).
pub const MAX_ENVELOPE_BYTES: usize = 256 << 10;
/// Archive members looked at before giving up.
const MAX_MEMBERS: usize = 10_000;

const FORMAT_ERROR: &str = "Unexpected pipeline file format. Support .zip, .tar.gz, .json or YAML";

/// The uploaded file: its name (from the part) and its bytes.
#[derive(Debug)]
pub struct Uploaded {
    /// The part's file name (`hello_world.yaml`), "" when it has none.
    pub file_name: String,
    /// The bytes as sent.
    pub bytes: Bytes,
}

/// Reads the `uploadfile` part of a `multipart/form-data` body.
pub async fn read_part(content_type: Option<&str>, body: Bytes) -> Result<Uploaded, KfpError> {
    let missing = || {
        KfpError::invalid(
            "Failed to read the pipeline file: the multipart form has no uploadfile part",
        )
    };
    let boundary = content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            KfpError::invalid(
                "Failed to read the pipeline file: the request is not multipart/form-data",
            )
        })?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream((MAX_FILE_BYTES + MAX_ENVELOPE_BYTES) as u64)
            .per_field(MAX_FILE_BYTES as u64),
    );
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let bad =
        |e: multer::Error| KfpError::invalid(format!("Failed to read the pipeline file: {e}"));
    while let Some(field) = form.next_field().await.map_err(bad)? {
        if field.name() != Some("uploadfile") {
            continue;
        }
        let file_name = field.file_name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(bad)?;
        return Ok(Uploaded { file_name, bytes });
    }
    Err(missing())
}

fn has_ext(name: &str, exts: &[&str]) -> bool {
    let lower = name.to_lowercase();
    exts.iter().any(|e| lower.ends_with(e))
}

/// The pipeline document inside an uploaded file, by KFP's rules.
pub fn pipeline_bytes(file: &Uploaded) -> Result<Vec<u8>, KfpError> {
    if has_ext(&file.file_name, &[".yaml", ".yml", ".json"]) {
        return Ok(file.bytes.to_vec());
    }
    let b = &file.bytes;
    if b.starts_with(b"PK") {
        return from_zip(b);
    }
    if b.starts_with(&[0x1f, 0x8b]) {
        return from_tar_gz(b);
    }
    Err(KfpError::invalid(FORMAT_ERROR))
}

fn read_bounded(r: impl Read) -> Result<Vec<u8>, KfpError> {
    let mut out = Vec::new();
    r.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| KfpError::invalid(format!("{FORMAT_ERROR}: {e}")))?;
    if out.len() > MAX_FILE_BYTES {
        return Err(KfpError::invalid(format!(
            "The pipeline file is larger than {} MiB once decompressed",
            MAX_FILE_BYTES >> 20
        )));
    }
    Ok(out)
}

fn from_zip(b: &[u8]) -> Result<Vec<u8>, KfpError> {
    let bad = |e: zip::result::ZipError| KfpError::invalid(format!("{FORMAT_ERROR}: {e}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(b)).map_err(bad)?;
    if archive.len() > MAX_MEMBERS {
        return Err(KfpError::invalid(format!(
            "{FORMAT_ERROR}: more than {MAX_MEMBERS} files in the archive"
        )));
    }
    let chosen = match archive.index_for_name("pipeline.yaml") {
        Some(i) => i,
        None => {
            let first = (0..archive.len())
                .find(|i| {
                    archive
                        .name_for_index(*i)
                        .is_some_and(|n| !n.ends_with('/'))
                })
                .ok_or_else(|| {
                    KfpError::invalid(format!("{FORMAT_ERROR}: the archive is empty"))
                })?;
            let name = archive.name_for_index(first).unwrap_or_default();
            if !has_ext(name, &[".yaml", ".yml"]) {
                return Err(KfpError::invalid(format!(
                    "{FORMAT_ERROR}: the archive has no pipeline.yaml and its first file {name:?} is not YAML"
                )));
            }
            first
        }
    };
    let member = archive.by_index(chosen).map_err(bad)?;
    read_bounded(member)
}

fn from_tar_gz(b: &[u8]) -> Result<Vec<u8>, KfpError> {
    // Two passes over the small compressed input: `pipeline.yaml` wins wherever it is, else the
    // first regular file must be YAML.
    let bad = |e: std::io::Error| KfpError::invalid(format!("{FORMAT_ERROR}: {e}"));
    let open = || tar::Archive::new(flate2::read::GzDecoder::new(b));
    let mut first: Option<String> = None;
    let mut archive = open();
    for (n, entry) in archive.entries().map_err(bad)?.enumerate() {
        if n >= MAX_MEMBERS {
            return Err(KfpError::invalid(format!(
                "{FORMAT_ERROR}: more than {MAX_MEMBERS} files in the archive"
            )));
        }
        let entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let base = path.trim_start_matches("./");
        if base == "pipeline.yaml" {
            return read_bounded(entry);
        }
        if first.is_none() {
            first = Some(path);
        }
    }
    let Some(first) = first else {
        return Err(KfpError::invalid(format!(
            "{FORMAT_ERROR}: the archive is empty"
        )));
    };
    if !has_ext(&first, &[".yaml", ".yml"]) {
        return Err(KfpError::invalid(format!(
            "{FORMAT_ERROR}: the archive has no pipeline.yaml and its first file {first:?} is not YAML"
        )));
    }
    let mut archive = open();
    for entry in archive.entries().map_err(bad)?.take(MAX_MEMBERS) {
        let entry = entry.map_err(bad)?;
        if entry.header().entry_type().is_file()
            && entry.path().map_err(bad)?.to_string_lossy() == first
        {
            return read_bounded(entry);
        }
    }
    Err(KfpError::invalid(FORMAT_ERROR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> Bytes {
        let path = format!(
            "{}/../../shared/corpus/packages/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    fn file(name: &str) -> Uploaded {
        Uploaded {
            file_name: name.into(),
            bytes: corpus(name),
        }
    }

    #[test]
    fn corpus_packages() {
        for name in ["hello_world.zip", "hello_world.tar.gz", "hello_world.json"] {
            let got = pipeline_bytes(&file(name)).unwrap();
            let parsed = kfp_apiservice::ir::parse_pipeline_file(&got)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(parsed.name, "hello-world", "{name}");
        }
        let e = pipeline_bytes(&file("first_file_not_yaml.zip")).unwrap_err();
        assert!(
            e.user.contains("Unexpected pipeline file format"),
            "{}",
            e.user
        );
        // Sniffed by content, not by name.
        let renamed = Uploaded {
            file_name: "package".into(),
            bytes: corpus("hello_world.tar.gz"),
        };
        assert!(pipeline_bytes(&renamed).is_ok());
        let text = Uploaded {
            file_name: "notes.txt".into(),
            bytes: Bytes::from_static(b"hello"),
        };
        assert!(pipeline_bytes(&text).is_err());
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        use std::io::Write;
        let mut tar = tar::Builder::new(Vec::new());
        let size = MAX_FILE_BYTES as u64 + 1024;
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            "pipeline.yaml",
            std::io::repeat(b'a').take(size),
        )
        .unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&raw).unwrap();
        let bomb = Uploaded {
            file_name: "p.tar.gz".into(),
            bytes: Bytes::from(gz.finish().unwrap()),
        };
        assert!(bomb.bytes.len() < 1 << 20, "small when compressed");
        let e = pipeline_bytes(&bomb).unwrap_err();
        assert!(e.user.contains("larger than 32 MiB"), "{}", e.user);
    }

    #[tokio::test]
    async fn multipart_parts() {
        let body = "--XX\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nv\r\n--XX\r\n\
                    Content-Disposition: form-data; name=\"uploadfile\"; filename=\"p.yaml\"\r\n\
                    Content-Type: application/octet-stream\r\n\r\nabc\r\n--XX--\r\n";
        let got = read_part(Some("multipart/form-data; boundary=XX"), Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(
            (got.file_name.as_str(), &got.bytes[..]),
            ("p.yaml", &b"abc"[..])
        );
        let none = "--XX\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nv\r\n--XX--\r\n";
        assert!(
            read_part(Some("multipart/form-data; boundary=XX"), Bytes::from(none))
                .await
                .is_err()
        );
        assert!(
            read_part(Some("application/json"), Bytes::new())
                .await
                .is_err()
        );
        assert!(
            read_part(
                Some("multipart/form-data; boundary=XX"),
                Bytes::from("garbage")
            )
            .await
            .is_err()
        );
    }
}
