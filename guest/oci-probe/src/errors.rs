//! Reading the error body of a registry answer.
//!
//! The distribution spec defines `{"errors":[{"code","message","detail"}]}`, but plenty of
//! answers are not that: a read-only distribution answers 405 in plain text, reverse proxies send
//! HTML. For those the probe keeps a short, printable excerpt so the operator still sees what the
//! registry said. Token endpoints speaking OAuth2 answer `{"error","error_description"}`; that
//! form is read as a one-entry error list, so both kinds quote the same way.

use serde::Deserialize;

/// How many characters of a non-JSON body the probe keeps.
const EXCERPT_CHARS: usize = 200;

/// One entry of an OCI error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciError {
    /// The error code, for example `DENIED` or `NAME_UNKNOWN`.
    pub code: String,
    /// The registry's human-readable message (may be empty).
    pub message: String,
    /// The optional `detail` value, rendered as compact JSON text.
    pub detail: Option<String>,
}

/// What an error body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorBody {
    /// No body, or only whitespace.
    Empty,
    /// A well-formed OCI error list with at least one entry.
    Oci(Vec<OciError>),
    /// Anything else: the printable start of the body.
    Raw(String),
}

#[derive(Deserialize)]
struct WireBody {
    errors: Vec<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

/// The RFC 6749 error answer of an OAuth2 token endpoint.
#[derive(Deserialize)]
struct WireOAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

impl ErrorBody {
    /// Classifies `body`; never fails, whatever the bytes are.
    pub fn parse(body: &[u8]) -> ErrorBody {
        if body.iter().all(u8::is_ascii_whitespace) {
            return ErrorBody::Empty;
        }
        if let Ok(wire) = serde_json::from_slice::<WireBody>(body)
            && !wire.errors.is_empty()
        {
            return ErrorBody::Oci(wire.errors.into_iter().map(OciError::from).collect());
        }
        match serde_json::from_slice::<WireOAuthError>(body) {
            Ok(wire) if !wire.error.is_empty() => ErrorBody::Oci(vec![OciError {
                code: wire.error,
                message: wire.error_description,
                detail: None,
            }]),
            _ => ErrorBody::Raw(excerpt(body)),
        }
    }

    /// The error codes, comma-separated, when the body is an OCI error list.
    pub fn code(&self) -> Option<String> {
        let ErrorBody::Oci(errors) = self else {
            return None;
        };
        let codes: Vec<&str> = errors
            .iter()
            .map(|e| e.code.as_str())
            .filter(|code| !code.is_empty())
            .collect();
        (!codes.is_empty()).then(|| codes.join(", "))
    }

    /// The messages, `; `-separated, when the body is an OCI error list.
    pub fn message(&self) -> Option<String> {
        let ErrorBody::Oci(errors) = self else {
            return None;
        };
        let messages: Vec<String> = errors
            .iter()
            .filter(|e| !e.message.is_empty())
            .map(|e| excerpt(e.message.as_bytes()))
            .collect();
        (!messages.is_empty()).then(|| messages.join("; "))
    }

    /// The raw excerpt, when the body was not an OCI error list.
    pub fn raw(&self) -> Option<&str> {
        match self {
            ErrorBody::Raw(text) => Some(text),
            _ => None,
        }
    }

    /// True when any entry carries `code`.
    pub fn has_code(&self, code: &str) -> bool {
        matches!(self, ErrorBody::Oci(errors) if errors.iter().any(|e| e.code == code))
    }

    /// `CODE: message` for a diagnosis sentence, or the quoted raw excerpt.
    pub fn summary(&self) -> Option<String> {
        match (self.code(), self.message(), self.raw()) {
            (Some(code), Some(message), _) => Some(format!("{code}: {message}")),
            (Some(code), None, _) => Some(code),
            (None, Some(message), _) => Some(message),
            (None, None, Some(raw)) => Some(format!("{raw:?}")),
            (None, None, None) => None,
        }
    }
}

impl From<WireError> for OciError {
    fn from(wire: WireError) -> Self {
        OciError {
            code: wire.code,
            message: wire.message,
            detail: wire.detail.filter(|d| !d.is_null()).map(|d| d.to_string()),
        }
    }
}

/// The first [`EXCERPT_CHARS`] characters of `body`, lossy UTF-8, control characters turned into
/// spaces and runs of spaces collapsed, so the text fits on one evidence line.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut taken = 0;
    let mut last_space = true;

    for c in text.chars() {
        if taken == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
        taken += 1;
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_error_body_yields_code_message_and_detail() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":{"Action":"push"}}]}"#;
        let parsed = ErrorBody::parse(body);

        assert_eq!(parsed.code().as_deref(), Some("DENIED"));
        assert_eq!(
            parsed.message().as_deref(),
            Some("requested access to the resource is denied")
        );
        let ErrorBody::Oci(errors) = &parsed else {
            panic!("expected an oci body, got {parsed:?}");
        };
        assert_eq!(errors[0].detail.as_deref(), Some(r#"{"Action":"push"}"#));
    }

    #[test]
    fn several_oci_errors_are_joined() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"a"},{"code":"DENIED","message":"b"}]}"#;
        let parsed = ErrorBody::parse(body);

        assert_eq!(parsed.code().as_deref(), Some("UNAUTHORIZED, DENIED"));
        assert_eq!(
            parsed.summary().as_deref(),
            Some("UNAUTHORIZED, DENIED: a; b")
        );
        assert!(parsed.has_code("DENIED"));
    }

    #[test]
    fn oauth2_error_answer_reads_as_code_and_message() {
        let body = br#"{"error":"invalid_grant","error_description":"refresh token expired"}"#;
        let parsed = ErrorBody::parse(body);

        assert_eq!(parsed.code().as_deref(), Some("invalid_grant"));
        assert_eq!(parsed.message().as_deref(), Some("refresh token expired"));
    }

    #[test]
    fn plain_text_body_is_kept_as_a_single_line_excerpt() {
        let parsed = ErrorBody::parse(b"405 method not allowed\r\n\tread-only mode\x07\n");

        assert_eq!(
            parsed,
            ErrorBody::Raw("405 method not allowed read-only mode".into())
        );
        assert_eq!(parsed.code(), None);
    }

    #[test]
    fn empty_body_is_empty() {
        assert_eq!(ErrorBody::parse(b""), ErrorBody::Empty);
        assert_eq!(ErrorBody::parse(b" \n "), ErrorBody::Empty);
        assert_eq!(ErrorBody::Empty.summary(), None);
    }

    #[test]
    fn garbage_and_foreign_json_become_raw_excerpts() {
        assert_eq!(
            ErrorBody::parse(&[0xff, 0xfe, b'{', b'x']),
            ErrorBody::Raw("\u{fffd}\u{fffd}{x".into())
        );
        assert_eq!(
            ErrorBody::parse(br#"{"errors":[]}"#),
            ErrorBody::Raw(r#"{"errors":[]}"#.into())
        );
        assert_eq!(
            ErrorBody::parse(br#"{"errors":"nope"}"#),
            ErrorBody::Raw(r#"{"errors":"nope"}"#.into())
        );
    }

    #[test]
    fn long_bodies_are_cut_to_the_excerpt_length() {
        let body = "x".repeat(1000);
        let text = excerpt(body.as_bytes());

        assert_eq!(text.chars().count(), EXCERPT_CHARS + 1);
        assert!(text.ends_with('…'));
    }
}
