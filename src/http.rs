//! Query parameters and errors of the workers' HTTP endpoints.
//!
//! Every endpoint says which parameters it takes; anything else, a repeated parameter or a value
//! out of range is a 400 that names the parameter and what is allowed. A typo such as
//! `?second=5` is an error, not a silent 30-second default.

use std::ops::RangeInclusive;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error response: a status and a plain-text message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(what: &str, err: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut message = self.message;
        message.push('\n');
        (self.status, message).into_response()
    }
}

/// A parsed, checked query string.
#[derive(Debug)]
pub struct Params {
    path: &'static str,
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `query` for the endpoint at `path`, which accepts only the names in `allowed`.
    pub fn parse(
        path: &'static str,
        query: Option<&str>,
        allowed: &[&str],
    ) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let allowed = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {name:?} for {path}; allowed: {allowed}"
                )));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::bad_request(format!(
                    "query parameter {name:?} given more than once for {path}"
                )));
            }
        }
        Ok(Params { path, pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A whole number in `range`, or `default` when absent. `unit` completes the message, as in
    /// "expected a whole number of seconds from 1 to 300".
    pub fn integer(
        &self,
        name: &str,
        range: RangeInclusive<u64>,
        default: u64,
        unit: &str,
    ) -> Result<u64, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(value) if range.contains(&value) => Ok(value),
            _ => Err(ApiError::bad_request(format!(
                "invalid value {raw:?} for query parameter {name:?} of {}: expected a whole number{unit} from {} to {}",
                self.path,
                range.start(),
                range.end()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_repeated_and_out_of_range_parameters() {
        let err = Params::parse("/p", Some("second=5"), &["seconds"]).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("\"second\"") && err.message.contains("allowed: seconds"));

        let err = Params::parse("/p", Some("seconds=1&seconds=2"), &["seconds"]).unwrap_err();
        assert!(err.message.contains("more than once"), "{}", err.message);

        let p = Params::parse("/p", Some("seconds=0"), &["seconds"]).unwrap();
        let err = p
            .integer("seconds", 1..=300, 30, " of seconds")
            .unwrap_err();
        assert!(err.message.contains("\"0\"") && err.message.contains("from 1 to 300"));

        let p = Params::parse("/p", Some("seconds=%2012"), &["seconds"]).unwrap();
        assert!(
            p.integer("seconds", 1..=300, 30, "").is_err(),
            "no silent trimming"
        );
    }

    #[test]
    fn defaults_apply_when_absent() {
        let p = Params::parse("/p", None, &["seconds"]).unwrap();
        assert_eq!(p.integer("seconds", 1..=300, 30, "").unwrap(), 30);
        let p = Params::parse("/p", Some("seconds=7"), &["seconds"]).unwrap();
        assert_eq!(p.integer("seconds", 1..=300, 30, "").unwrap(), 7);
    }
}
