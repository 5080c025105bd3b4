//! Name and label rules (DNS-1123 subdomain and label, label values, KFP's pipeline-name rule),
//! with the same messages apimachinery prints so kubectl users recognise them.
//!
//! Pure string checks; no knowledge of objects.

/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Maximum length of a DNS-1123 label and of a label value.
pub const DNS1123_LABEL_MAX: usize = 63;
/// Maximum length of `pipelineInfo.name` inside the IR.
pub const PIPELINE_INFO_NAME_MAX: usize = 128;

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks a DNS-1123 subdomain (object names); returns apimachinery's messages.
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    let ok = !value.is_empty()
        && value.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(is_lower_alnum)
                && part.ends_with(is_lower_alnum)
                && part.chars().all(|c| is_lower_alnum(c) || c == '-')
        });
    if !ok {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_owned(),
        );
    }
    errs
}

/// Checks a DNS-1123 label (namespace names); returns apimachinery's messages.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    let ok = !value.is_empty()
        && value.starts_with(is_lower_alnum)
        && value.ends_with(is_lower_alnum)
        && value.chars().all(|c| is_lower_alnum(c) || c == '-');
    if !ok {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
             '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_owned(),
        );
    }
    errs
}

/// `spec.versionName`: `^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`, at most 253 characters (KFP's CRD).
pub fn version_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    let ok = !value.is_empty()
        && value.starts_with(is_lower_alnum)
        && value.ends_with(is_lower_alnum)
        && value
            .chars()
            .all(|c| is_lower_alnum(c) || c == '-' || c == '.');
    if !ok {
        errs.push(
            "must consist of lower case alphanumeric characters, '-' or '.', and must start and \
             end with an alphanumeric character (regex used for validation is \
             '^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$')"
                .to_owned(),
        );
    }
    errs
}

/// KFP's rule for `pipelineInfo.name`: `^[a-z0-9][a-z0-9-]{0,127}$`.
pub fn pipeline_info_name(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= PIPELINE_INFO_NAME_MAX
        && value.starts_with(is_lower_alnum)
        && value.chars().all(|c| is_lower_alnum(c) || c == '-');
    (!ok).then(|| {
        format!(
            "pipeline's name must contain only lowercase alphanumeric characters or '-', must \
             start with an alphanumeric character and be at most {PIPELINE_INFO_NAME_MAX} \
             characters (regex used for validation is '^[a-z0-9][a-z0-9-]{{0,127}}$'); got {} \
             characters",
            value.chars().count()
        )
    })
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting and ending
/// alphanumeric.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.is_empty() {
        return errs;
    }
    if value.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = value.starts_with(alnum)
        && value.ends_with(alnum)
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        errs.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', \
             or 'my_value', or '12345', regex used for validation is \
             '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_owned(),
        );
    }
    errs
}

/// Checks a qualified name (label keys, annotation keys): an optional DNS subdomain prefix and
/// `/`, then a name of at most 63 characters.
pub fn qualified_name(value: &str) -> Vec<String> {
    let (prefix, name) = match value.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, value),
    };
    let mut errs = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errs.push("prefix part must be non-empty".to_owned());
        } else {
            errs.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > DNS1123_LABEL_MAX {
        errs.push(format!(
            "name part must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    } else if !(name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        errs.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
             '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                .to_owned(),
        );
    }
    errs
}

/// Truncates to at most `max` bytes on a character boundary, then trims trailing characters a
/// label value may not end with.
pub fn truncate_label_value(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end]
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert!(dns1123_subdomain("hello-world").is_empty());
        assert!(dns1123_subdomain("a.b-c.d").is_empty());
        assert!(!dns1123_subdomain("Hello").is_empty());
        assert!(!dns1123_subdomain("-a").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1123_subdomain("").is_empty());
        assert!(!dns1123_subdomain(&"a".repeat(254)).is_empty());
        assert!(dns1123_subdomain(&"a".repeat(253)).is_empty());
    }

    #[test]
    fn pipeline_info_names() {
        assert!(pipeline_info_name("hello-world").is_none());
        assert!(pipeline_info_name("team.pipeline").is_some());
        assert!(pipeline_info_name("My_Pipeline").is_some());
        assert!(pipeline_info_name(&"a".repeat(128)).is_none());
        assert!(pipeline_info_name(&"a".repeat(129)).is_some());
    }

    #[test]
    fn labels() {
        assert!(label_value("").is_empty());
        assert!(label_value("Ab_c.d-1").is_empty());
        assert!(!label_value("-x").is_empty());
        assert!(qualified_name("pipelines.kubeflow.org/pipeline-id").is_empty());
        assert!(!qualified_name("/x").is_empty());
        assert!(!qualified_name("UPPER.example/x").is_empty());
        assert_eq!(
            truncate_label_value(&format!("{}-b", "a".repeat(62)), 63),
            "a".repeat(62)
        );
    }

    #[test]
    fn version_names() {
        assert!(version_name("v1.2-rc1").is_empty());
        assert!(!version_name("v1_2").is_empty());
        assert!(!version_name("").is_empty());
    }
}
