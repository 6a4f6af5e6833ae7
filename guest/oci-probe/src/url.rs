//! Just enough URL handling for the probe, written by hand to keep the component small.
//!
//! Paths and queries are kept byte for byte: distribution signs the `_state` query parameter of
//! an upload `Location` with an HMAC, so decoding and re-encoding it (turning `%2B` into `+`, say)
//! would make the cancel request fail. Dot segments in relative references are left as they are;
//! registries answer with absolute URLs, absolute paths or plain names.

use std::fmt;

/// The schemes a registry can be reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP, for registries on a trusted network.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port used when a URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// The text was empty.
    Empty,
    /// The scheme is neither `http` nor `https`.
    UnsupportedScheme(String),
    /// Nothing names a host.
    MissingHost,
    /// The port is not a number between 1 and 65535.
    InvalidPort(String),
    /// The URL carries `user:password@`, which would put a secret into every log line.
    UserInfo,
    /// A registry URL carries a query, which the registry API has no use for.
    Query,
    /// The host contains a character no host name can hold.
    InvalidHost(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Empty => f.write_str("the url is empty"),
            UrlError::UnsupportedScheme(scheme) => {
                write!(
                    f,
                    "scheme {scheme:?} is not supported, use `https` or `http`"
                )
            }
            UrlError::MissingHost => f.write_str("the url names no host"),
            UrlError::InvalidPort(port) => {
                write!(f, "port {port:?} is not a number from 1 to 65535")
            }
            UrlError::UserInfo => f.write_str("the url contains a user name or password"),
            UrlError::Query => f.write_str("the url contains a query (`?…`)"),
            UrlError::InvalidHost(host) => write!(f, "host {host:?} is not a valid host name"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Scheme, host and effective port: the unit credentials are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The scheme; a downgrade from https to http is a different origin.
    pub scheme: Scheme,
    /// The host, lower-cased.
    pub host: String,
    /// The port, with the scheme's default filled in.
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// An absolute `http` or `https` URL split into the parts an HTTP request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    scheme: Scheme,
    host: String,
    port: Option<u16>,
    path: String,
    query: Option<String>,
}

impl Url {
    /// Parses an absolute URL `scheme://host[:port][/path][?query]`; a fragment is dropped.
    pub fn parse(input: &str) -> Result<Url, UrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(UrlError::Empty);
        }
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(UrlError::UnsupportedScheme(String::new()));
        };
        let scheme = parse_scheme(scheme)?;

        let rest = strip_fragment(rest);
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(split);
        let (host, port) = parse_authority(authority)?;
        let (path, query) = split_query(path_and_query);

        Ok(Url {
            scheme,
            host,
            port,
            path: path.to_string(),
            query: query.map(str::to_string),
        })
    }

    /// Parses a configured registry URL: no scheme means https, trailing slashes are trimmed.
    ///
    /// A trailing `/v2` is trimmed too, since operators often paste the API root; the probe adds
    /// `/v2/` itself.
    pub fn parse_registry(input: &str) -> Result<Url, UrlError> {
        let input = input.trim();
        let mut url = if input.contains("://") {
            Url::parse(input)?
        } else {
            Url::parse(&format!("https://{input}"))?
        };
        if url.query.is_some() {
            return Err(UrlError::Query);
        }

        let trimmed = url.path.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/v2").unwrap_or(trimmed);
        url.path = trimmed.trim_end_matches('/').to_string();
        Ok(url)
    }

    /// Resolves `reference` (a `Location` header, say) against this URL.
    ///
    /// Accepts an absolute URL, a scheme-relative `//host/…`, an absolute path, a relative path or
    /// a bare query; the path and query of the reference are kept exactly as written.
    pub fn resolve(&self, reference: &str) -> Result<Url, UrlError> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err(UrlError::Empty);
        }
        if has_scheme(reference) {
            return Url::parse(reference);
        }
        if reference.starts_with("//") {
            return Url::parse(&format!("{}:{reference}", self.scheme.as_str()));
        }

        let (path, query) = split_query(strip_fragment(reference));
        let query = query.map(str::to_string);
        let (path, query) = if path.is_empty() {
            (self.path.clone(), query.or_else(|| self.query.clone()))
        } else if path.starts_with('/') {
            (path.to_string(), query)
        } else {
            (format!("{}{path}", self.directory()), query)
        };
        Ok(Url {
            path,
            query,
            ..self.clone()
        })
    }

    /// This URL with `suffix` (which starts with `/`) appended to its path and the query dropped.
    pub fn join_path(&self, suffix: &str) -> Url {
        let base = self.path.trim_end_matches('/');
        Url {
            path: format!("{base}{suffix}"),
            query: None,
            ..self.clone()
        }
    }

    /// This URL with `params` appended to its query, names and values percent-encoded; an
    /// existing query (a realm may carry one) is kept in front.
    pub fn with_query_params(&self, params: &[(&str, &str)]) -> Url {
        let added: Vec<String> = params
            .iter()
            .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
            .collect();
        let query = match self.query.as_deref().filter(|q| !q.is_empty()) {
            Some(existing) => format!("{existing}&{}", added.join("&")),
            None => added.join("&"),
        };
        Url {
            query: (!query.is_empty()).then_some(query),
            ..self.clone()
        }
    }

    /// True when a request to `target` would leave https for plain http.
    pub fn is_downgraded_by(&self, target: &Url) -> bool {
        self.scheme == Scheme::Https && target.scheme == Scheme::Http
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host, lower-cased (an IPv6 address keeps its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, with the scheme's default when the URL names none.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// `host[:port]` as written, the form of an HTTP authority and of an image reference prefix.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// The path (at least `/`) and query, exactly as received.
    pub fn path_and_query(&self) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        match &self.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        }
    }

    /// The origin credentials are bound to.
    pub fn origin(&self) -> Origin {
        Origin {
            scheme: self.scheme,
            host: self.host.clone(),
            port: self.port(),
        }
    }

    /// True when both URLs share scheme, host and effective port.
    pub fn same_origin(&self, other: &Url) -> bool {
        self.origin() == other.origin()
    }

    /// The path up to and including its last `/`, the base of a relative reference.
    fn directory(&self) -> &str {
        match self.path.rfind('/') {
            Some(end) => &self.path[..=end],
            None => "/",
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())?;
        if self.path.is_empty() && self.query.is_none() {
            return Ok(());
        }
        f.write_str(&self.path_and_query())
    }
}

/// Percent-encodes everything but the RFC 3986 unreserved characters, which suits both a query
/// value and an `application/x-www-form-urlencoded` body.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn parse_scheme(scheme: &str) -> Result<Scheme, UrlError> {
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(Scheme::Https),
        "http" => Ok(Scheme::Http),
        _ => Err(UrlError::UnsupportedScheme(scheme.to_string())),
    }
}

/// True when `reference` starts with `scheme:` in the RFC 3986 sense.
fn has_scheme(reference: &str) -> bool {
    let Some(colon) = reference.find(':') else {
        return false;
    };
    let scheme = &reference[..colon];
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn strip_fragment(text: &str) -> &str {
    text.split_once('#').map_or(text, |(before, _)| before)
}

fn split_query(text: &str) -> (&str, Option<&str>) {
    match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    }
}

fn parse_authority(authority: &str) -> Result<(String, Option<u16>), UrlError> {
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    // An IPv6 literal holds colons of its own, so the port starts after the closing bracket.
    let port_colon = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].find(':').map(|at| bracket + at),
        None => authority.rfind(':'),
    };
    let (host, port) = match port_colon {
        Some(colon) => (
            &authority[..colon],
            Some(parse_port(&authority[colon + 1..])?),
        ),
        None => (authority, None),
    };

    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"<>\\^`{|}".contains(c))
    {
        return Err(UrlError::InvalidHost(host.to_string()));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_port(port: &str) -> Result<u16, UrlError> {
    match port.parse::<u16>() {
        Ok(number) if number > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(number),
        _ => Err(UrlError::InvalidPort(port.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "_state=AbC%2Bd%2Fe%3D%3D+x=y&digest=";

    fn upload_base() -> Url {
        Url::parse("https://registry.example:5000/v2/team/app/blobs/uploads/").unwrap()
    }

    #[test]
    fn registry_url_without_scheme_means_https() {
        let url = Url::parse_registry("registry.example:5000/").unwrap();

        assert_eq!(url.scheme(), Scheme::Https);
        assert_eq!(url.authority(), "registry.example:5000");
        assert_eq!(url.to_string(), "https://registry.example:5000");
    }

    #[test]
    fn registry_url_loses_trailing_slashes_and_api_root() {
        let url = Url::parse_registry("http://Registry.Example/mirror/v2///").unwrap();

        assert_eq!(url.to_string(), "http://registry.example/mirror");
        assert_eq!(
            url.join_path("/v2/a/blobs/uploads/").to_string(),
            "http://registry.example/mirror/v2/a/blobs/uploads/"
        );
    }

    #[test]
    fn registry_url_refuses_other_schemes_user_info_and_bad_ports() {
        assert_eq!(
            Url::parse_registry("ftp://r.example"),
            Err(UrlError::UnsupportedScheme("ftp".into()))
        );
        assert_eq!(
            Url::parse_registry("https://u:p@r.example"),
            Err(UrlError::UserInfo)
        );
        assert_eq!(
            Url::parse_registry("r.example:99999"),
            Err(UrlError::InvalidPort("99999".into()))
        );
        assert_eq!(Url::parse_registry("https://"), Err(UrlError::MissingHost));
        assert_eq!(Url::parse_registry("r.example/?x=1"), Err(UrlError::Query));
    }

    #[test]
    fn ipv6_host_keeps_brackets_and_port() {
        let url = Url::parse_registry("http://[::1]:5000").unwrap();

        assert_eq!(url.host(), "[::1]");
        assert_eq!(url.port(), 5000);
    }

    #[test]
    fn absolute_location_is_used_as_is() {
        let location = format!("https://blobs.example/upload/abc?{STATE}");
        let resolved = upload_base().resolve(&location).unwrap();

        assert_eq!(resolved.to_string(), location);
        assert!(!resolved.same_origin(&upload_base()));
    }

    #[test]
    fn absolute_path_location_keeps_the_registry_origin_and_exact_state() {
        let location = format!("/v2/team/app/blobs/uploads/1f2e?{STATE}");
        let resolved = upload_base().resolve(&location).unwrap();

        assert_eq!(
            resolved.to_string(),
            format!("https://registry.example:5000{location}")
        );
        assert_eq!(resolved.path_and_query(), location);
        assert!(resolved.same_origin(&upload_base()));
    }

    #[test]
    fn relative_location_resolves_against_the_upload_directory() {
        let resolved = upload_base().resolve(&format!("1f2e?{STATE}")).unwrap();

        assert_eq!(
            resolved.path_and_query(),
            format!("/v2/team/app/blobs/uploads/1f2e?{STATE}")
        );
    }

    #[test]
    fn query_only_location_keeps_the_request_path() {
        let resolved = upload_base().resolve("?upload=7").unwrap();

        assert_eq!(
            resolved.path_and_query(),
            "/v2/team/app/blobs/uploads/?upload=7"
        );
    }

    #[test]
    fn scheme_relative_location_takes_the_request_scheme() {
        let resolved = upload_base().resolve("//other.example/u/1").unwrap();

        assert_eq!(resolved.to_string(), "https://other.example/u/1");
    }

    #[test]
    fn location_with_unknown_scheme_is_refused() {
        assert_eq!(
            upload_base().resolve("file:///etc/passwd"),
            Err(UrlError::UnsupportedScheme("file".into()))
        );
    }

    #[test]
    fn query_params_are_percent_encoded_and_appended() {
        let realm = Url::parse("https://auth.example/token?account=x").unwrap();
        let url = realm.with_query_params(&[
            ("service", "registry example"),
            ("scope", "repository:team/app:pull,push"),
        ]);

        assert_eq!(
            url.to_string(),
            "https://auth.example/token?account=x&service=registry%20example\
             &scope=repository%3Ateam%2Fapp%3Apull%2Cpush"
        );
        assert_eq!(percent_encode("a+b=é"), "a%2Bb%3D%C3%A9");
    }

    #[test]
    fn only_https_to_http_is_a_downgrade() {
        let https = Url::parse("https://r.example").unwrap();
        let http = Url::parse("http://auth.example").unwrap();

        assert!(https.is_downgraded_by(&http));
        assert!(!http.is_downgraded_by(&https));
        assert!(!http.is_downgraded_by(&http));
    }

    #[test]
    fn origins_compare_with_default_ports_and_scheme() {
        let a = Url::parse("https://r.example/x").unwrap();
        let b = Url::parse("https://R.example:443/y").unwrap();
        let downgraded = Url::parse("http://r.example:443/x").unwrap();

        assert!(a.same_origin(&b));
        assert!(!a.same_origin(&downgraded));
        assert_eq!(a.origin().to_string(), "https://r.example");
        assert_eq!(downgraded.origin().to_string(), "http://r.example:443");
    }
}
