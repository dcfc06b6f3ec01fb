//! The hub's file listing (`/api/v1/models/{owner}/{name}/repo/files`), read as tolerantly as the
//! Python client reads it.

use serde_json::Value;

/// One file of a repository at a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    /// Repo-relative, `/`-separated.
    pub path: String,
    pub size: Option<u64>,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: Option<String>,
}

/// What a listing said.
#[derive(Debug, PartialEq, Eq)]
pub enum Listing {
    Files(Vec<RepoFile>),
    /// `Files: null`: the hub's answer for a revision it does not have.
    UnknownRevision,
}

fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| v.get(*n))
        .filter(|v| !v.is_null())
}

/// Parses the JSON envelope; entries of type `tree` and entries without a path are skipped.
pub fn parse_listing(body: &[u8]) -> Result<Listing, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = field(&v, &["Data", "data"]).ok_or("no Data field")?;
    let files = if data.is_array() {
        Some(data)
    } else {
        field(data, &["Files", "files"])
    };
    let Some(files) = files else {
        return Ok(Listing::UnknownRevision);
    };
    let files = files.as_array().ok_or("Files is not a list")?;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let kind = field(f, &["Type", "type"])
            .and_then(Value::as_str)
            .unwrap_or("blob");
        let path = field(f, &["Path", "path", "Name"])
            .and_then(Value::as_str)
            .unwrap_or("");
        if kind == "tree" || path.is_empty() {
            continue;
        }
        let sha256 = field(f, &["Sha256", "sha256"])
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase());
        if let Some(s) = &sha256 {
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{path}: Sha256 {s:?} is not a SHA-256 digest"));
            }
        }
        out.push(RepoFile {
            path: path.to_string(),
            size: field(f, &["Size", "size"]).and_then(Value::as_u64),
            sha256,
        });
    }
    Ok(Listing::Files(out))
}

/// The message and request id of an error envelope, for error text.
pub fn error_details(body: &[u8]) -> (String, Option<String>) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = field(
        &v,
        &[
            "message", "Message", "msg", "Msg", "error", "Error", "detail", "Detail",
        ],
    )
    .and_then(Value::as_str)
    .map(str::to_string)
    .unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        text.chars()
            .take(200)
            .collect::<String>()
            .trim()
            .to_string()
    });
    let request_id = field(&v, &["RequestId", "request_id"])
        .and_then(Value::as_str)
        .map(str::to_string);
    (message, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_envelope_and_its_variants() {
        let body = br#"{"Code":200,"Success":true,"Data":{"Files":[
            {"Name":"sub","Path":"sub","Type":"tree","Size":0,"Sha256":""},
            {"Name":"a.json","Path":"sub/a.json","Type":"blob","Size":5,
             "Sha256":"2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824"},
            {"path":"b.bin","size":7}]}}"#;
        let Listing::Files(files) = parse_listing(body).unwrap() else {
            panic!()
        };
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "sub/a.json");
        assert_eq!(files[0].size, Some(5));
        assert_eq!(
            files[0].sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert_eq!(files[1].sha256, None);
        assert_eq!(
            parse_listing(br#"{"Code":200,"Data":{"Files":null}}"#).unwrap(),
            Listing::UnknownRevision
        );
        assert!(parse_listing(b"<html>").is_err());
        assert!(parse_listing(br#"{"Data":{"Files":[{"Path":"x","Sha256":"zz"}]}}"#).is_err());
        let (msg, id) =
            error_details(br#"{"Code":1,"Message":"record not found","RequestId":"r1"}"#);
        assert_eq!(msg, "record not found");
        assert_eq!(id.as_deref(), Some("r1"));
    }
}
