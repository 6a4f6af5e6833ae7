//! Reading `WWW-Authenticate` challenges (RFC 9110 §11.6.1).
//!
//! A registry names how it wants to be authenticated in this header: `Basic realm="…"` for
//! credentials sent as they are, `Bearer realm="…",service="…",scope="…"` for a token fetched
//! from the realm first. One header value may hold several challenges, and a response may carry
//! several header lines. The grammar makes a comma both the separator of challenges and of
//! parameters, so the parser decides by looking ahead: `name=` continues the current challenge,
//! a bare token starts the next one.
//!
//! Registry answers are untrusted input, so the parser never panics and never loops: whatever it
//! cannot read it skips, keeping the challenges and parameters it could read.

/// One challenge: a scheme and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased (`basic`, `bearer`, …).
    pub scheme: String,
    /// Parameter names (lower-cased) and values (unquoted, escapes removed), in header order.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// True for the `Bearer` scheme, whatever its case.
    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer"
    }

    /// True for the `Basic` scheme, whatever its case.
    pub fn is_basic(&self) -> bool {
        self.scheme == "basic"
    }

    /// The value of the first parameter called `name` (compared case-insensitively).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The `realm` parameter: the token endpoint of a Bearer challenge.
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    /// The `service` parameter the token endpoint expects back.
    pub fn service(&self) -> Option<&str> {
        self.param("service")
    }

    /// The `scope` parameter: the access the registry wants a token for.
    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// The `error` parameter, e.g. `insufficient_scope` or `invalid_token`.
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }
}

/// Every challenge in all `values` (one per `WWW-Authenticate` header line), in order.
pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    values.into_iter().flat_map(parse).collect()
}

/// Every challenge in one header value, in order.
pub fn parse(value: &str) -> Vec<Challenge> {
    let mut cursor = Cursor::new(value);
    let mut challenges = Vec::new();

    while !cursor.at_end() {
        cursor.skip_separators();
        let scheme = cursor.token();
        if scheme.is_empty() {
            // Not a token character: skip it, so garbage cannot stall the loop.
            cursor.bump();
            continue;
        }
        let params = parameters(&mut cursor);
        challenges.push(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        });
    }
    challenges
}

/// The parameters after a scheme, up to the next scheme or the end of the value.
fn parameters(cursor: &mut Cursor) -> Vec<(String, String)> {
    let mut params = Vec::new();
    loop {
        let start = cursor.position;
        cursor.skip_separators();
        let name = cursor.token();
        cursor.skip_spaces();
        if name.is_empty() || !cursor.eat('=') {
            // A bare token is the next challenge's scheme (or a token68, which no registry
            // scheme uses); hand it back to the caller.
            cursor.position = start;
            return params;
        }
        // A token68 such as `abc==` ends in further `=`; it carries no parameter.
        if cursor.peek() == Some('=') {
            while cursor.eat('=') {}
            continue;
        }
        cursor.skip_spaces();
        let value = match cursor.peek() {
            Some('"') => cursor.quoted(),
            _ => cursor.bare_value(),
        };
        params.push((name.to_ascii_lowercase(), value));
    }
}

/// A position in a header value, moving over whole characters.
struct Cursor {
    chars: Vec<char>,
    position: usize,
}

impl Cursor {
    fn new(text: &str) -> Self {
        Cursor {
            chars: text.chars().collect(),
            position: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.position >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.position).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.position += 1;
        Some(c)
    }

    fn eat(&mut self, expected: char) -> bool {
        let matched = self.peek() == Some(expected);
        if matched {
            self.position += 1;
        }
        matched
    }

    fn skip_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.position;
        while self.peek().is_some_and(&keep) {
            self.position += 1;
        }
        self.chars[start..self.position].iter().collect()
    }

    fn skip_spaces(&mut self) {
        self.skip_while(|c| c == ' ' || c == '\t');
    }

    fn skip_separators(&mut self) {
        self.skip_while(|c| c == ',' || c.is_whitespace());
    }

    /// An RFC 9110 token; empty when the next character cannot start one.
    fn token(&mut self) -> String {
        self.skip_while(is_token_char)
    }

    /// An unquoted value; more lenient than a token, since some servers leave a URL unquoted.
    fn bare_value(&mut self) -> String {
        self.skip_while(|c| c != ',' && !c.is_whitespace())
    }

    /// A quoted string starting at `"`; an unterminated one runs to the end of the value.
    fn quoted(&mut self) -> String {
        self.bump();
        let mut value = String::new();
        while let Some(c) = self.bump() {
            match c {
                '"' => break,
                '\\' => value.extend(self.bump()),
                other => value.push(other),
            }
        }
        value
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests;
