//! The job format: one JSON object per job.

use serde_json::{Map, Value};

use ofa_api::{ErrorType, Failure};

/// Where a job's image comes from: exactly one per job.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// Base64 in the job itself.
    Inline(String),
    /// An http or https URL, fetched with limits.
    Url(String),
    /// A path relative to the image root.
    Path(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub text: Option<String>,
    pub premise: Option<String>,
    /// `None` when the job names no source or more than one (an error result, not a retry).
    pub image: Result<ImageSource, Failure>,
    pub meta: Option<Value>,
}

/// Not a job at all (not a JSON object, no string `id`): it can never be answered, since a
/// result needs the caller's key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NotAJob(pub String);

impl Job {
    pub fn parse(bytes: &[u8]) -> Result<Job, NotAJob> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| NotAJob(format!("not JSON: {e}")))?;
        let Value::Object(mut o) = v else {
            return Err(NotAJob("not a JSON object".into()));
        };
        let id = match o.remove("id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            Some(other) => {
                return Err(NotAJob(format!(
                    "\"id\" must be a non-empty string, got {other}"
                )))
            }
            None => return Err(NotAJob("no \"id\"".into())),
        };
        if let Err(why) = check_id(&id) {
            // Answered as an error under the id as given (JSON carries any string), so the
            // caller learns which line was wrong; never published as a message id.
            return Ok(Job {
                id,
                text: None,
                premise: None,
                image: Err(Failure::new(ErrorType::InvalidJobId, why)),
                meta: None,
            });
        }
        let text = string(&mut o, "text");
        let premise = string(&mut o, "premise");
        let meta = o.remove("meta");
        let sources: Vec<ImageSource> = [
            string(&mut o, "image").map(ImageSource::Inline),
            string(&mut o, "image_url").map(ImageSource::Url),
            string(&mut o, "image_path").map(ImageSource::Path),
        ]
        .into_iter()
        .flatten()
        .collect();
        let image = match <[ImageSource; 1]>::try_from(sources) {
            Ok([one]) => Ok(one),
            Err(v) if v.is_empty() => Err(Failure::new(
                ErrorType::MissingImage,
                "the job has no image source (image, image_url or image_path)",
            )),
            Err(_) => Err(Failure::new(
                ErrorType::InvalidJob,
                "the job has more than one image source (image, image_url, image_path)",
            )),
        };
        Ok(Job {
            id,
            text,
            premise,
            image,
            meta,
        })
    }
}

/// Longest job id: what AMQP's message-id property holds, and plenty for a key.
pub const MAX_ID_BYTES: usize = 255;

/// A job id is at most [`MAX_ID_BYTES`] bytes with no control characters (no line breaks to
/// forge a log line or a results-file line with).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "\"id\" has {} bytes, more than {MAX_ID_BYTES}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("\"id\" contains a control character".into());
    }
    Ok(())
}

/// A string field; any other JSON type reads as absent and is reported by the caller's checks.
fn string(o: &mut Map<String, Value>, key: &str) -> Option<String> {
    match o.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_non_jobs() {
        let j = Job::parse(
            br#"{"id": "a1", "text": "x", "image_url": "http://h/i.png", "meta": {"sku": 7}}"#,
        )
        .unwrap();
        assert_eq!(j.image, Ok(ImageSource::Url("http://h/i.png".into())));
        assert_eq!(j.meta, Some(serde_json::json!({"sku": 7})));
        for bad in [
            &b"not json"[..],
            b"[1]",
            br#"{"text": "x"}"#,
            br#"{"id": 5}"#,
        ] {
            assert!(Job::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let two =
            Job::parse(br#"{"id": "b", "text": "x", "image": "aGk=", "image_path": "a.png"}"#)
                .unwrap();
        assert_eq!(two.image.unwrap_err().kind.as_str(), "invalid_job");
        let none = Job::parse(br#"{"id": "c", "text": "x"}"#).unwrap();
        assert_eq!(none.image.unwrap_err().kind.as_str(), "missing_image");
        let long = format!(
            r#"{{"id": "{}", "text": "x", "image": "aGk="}}"#,
            "a".repeat(300)
        );
        let j = Job::parse(long.as_bytes()).unwrap();
        assert_eq!(j.id.len(), 300, "the id as given, for the error result");
        assert_eq!(j.image.unwrap_err().kind.as_str(), "invalid_job_id");
        let broken = Job::parse(br#"{"id": "a\nevent=forged", "text": "x", "image": "aGk="}"#);
        assert_eq!(
            broken.unwrap().image.unwrap_err().kind.as_str(),
            "invalid_job_id"
        );
        assert!(check_id(&"é".repeat(127)).is_ok());
        assert!(check_id(&"é".repeat(128)).is_err(), "bytes, not characters");
    }
}
