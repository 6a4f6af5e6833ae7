//! Which request runs the check, and the short JSON errors for every other request.
//!
//! The service has one resource, the check's result, at two paths: `/` for a status page that
//! knows nothing else, and `/checks/<checkId>` for a scheduler that names what it runs.

use spin_sdk::http::{Method, Request, Response};

/// The paths that run the check.
pub const CHECK_PATHS: [&str; 2] = ["/", "/checks/check.integration.oci.push"];

/// Set by Spin to the request path relative to the component's route, so the service answers the
/// same whether it is mounted at `/...` or at `/doctor/...`.
const SPIN_PATH_INFO: &str = "spin-path-info";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Run the check and answer with its result.
    RunCheck,
    /// No such resource.
    NotFound,
    /// The resource exists but only answers `GET`.
    MethodNotAllowed,
}

/// The request path without its query, relative to the component's route where the platform
/// says what that is.
pub fn path_of(request: &Request) -> String {
    let path = request
        .header(SPIN_PATH_INFO)
        .and_then(|value| value.as_str())
        .filter(|info| !info.is_empty())
        .unwrap_or_else(|| request.path());
    match path.split_once('?') {
        Some((path, _query)) => path.to_string(),
        None => path.to_string(),
    }
}

/// Decides what `method` on `path` asks for; the path is matched exactly.
pub fn route(method: &Method, path: &str) -> Route {
    let known = CHECK_PATHS.contains(&path) || path.is_empty();
    match (known, method) {
        (false, _) => Route::NotFound,
        (true, Method::Get) => Route::RunCheck,
        (true, _) => Route::MethodNotAllowed,
    }
}

/// `404` naming the paths that exist.
pub fn not_found(path: &str) -> Response {
    let message = format!(
        "no resource at {path:?}; `GET {}` or `GET {}` runs the check",
        CHECK_PATHS[0], CHECK_PATHS[1]
    );
    error(404, &message).build()
}

/// `405` with the one method the resource answers.
pub fn method_not_allowed(method: &Method) -> Response {
    let message = format!("method `{}` is not allowed; use `GET`", method_name(method));
    error(405, &message).header("allow", "GET").build()
}

fn error(status: u16, message: &str) -> spin_sdk::http::ResponseBuilder {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut builder = Response::builder();
    builder
        .status(status)
        .header("content-type", "application/json")
        .body(body);
    builder
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_on_either_check_path_runs_the_check() {
        assert_eq!(route(&Method::Get, "/"), Route::RunCheck);
        assert_eq!(
            route(&Method::Get, "/checks/check.integration.oci.push"),
            Route::RunCheck
        );
    }

    #[test]
    fn other_methods_on_a_check_path_are_not_allowed() {
        assert_eq!(route(&Method::Post, "/"), Route::MethodNotAllowed);
        assert_eq!(
            route(&Method::Delete, "/checks/check.integration.oci.push"),
            Route::MethodNotAllowed
        );
    }

    #[test]
    fn every_other_path_is_not_found_whatever_the_method() {
        for path in ["/checks", "/checks/check.other", "/index.html", "//"] {
            assert_eq!(route(&Method::Get, path), Route::NotFound, "{path}");
        }
        assert_eq!(route(&Method::Post, "/nope"), Route::NotFound);
    }
}
