//! The challenge parser against real registry headers, hand-picked edge cases and generated input.

use std::time::Duration;

use super::*;
use crate::testing::{Rng, fuzz_for, garbage};

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn distribution_bearer_challenge_yields_realm_service_and_scope() {
    let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#;

    let challenges = parse(header);

    assert_eq!(challenges.len(), 1);
    let bearer = &challenges[0];
    assert!(bearer.is_bearer());
    assert_eq!(bearer.realm(), Some("https://auth.docker.io/token"));
    assert_eq!(bearer.service(), Some("registry.docker.io"));
    assert_eq!(bearer.scope(), Some("repository:library/alpine:pull,push"));
    assert_eq!(bearer.error(), None);
}

#[test]
fn scheme_and_parameter_names_ignore_case_and_order() {
    let challenges = parse(r#"bEaReR Error="insufficient_scope", SCOPE="a:b:c", Realm="r""#);

    assert!(challenges[0].is_bearer());
    assert_eq!(challenges[0].realm(), Some("r"));
    assert_eq!(challenges[0].scope(), Some("a:b:c"));
    assert_eq!(challenges[0].error(), Some("insufficient_scope"));
}

#[test]
fn several_challenges_in_one_value_are_split_at_the_next_scheme() {
    let challenges = parse(r#"Basic realm="x", Bearer realm="y",service="z""#);

    assert_eq!(challenges.len(), 2);
    assert!(challenges[0].is_basic());
    assert_eq!(challenges[0].params, params(&[("realm", "x")]));
    assert!(challenges[1].is_bearer());
    assert_eq!(
        challenges[1].params,
        params(&[("realm", "y"), ("service", "z")])
    );
}

#[test]
fn several_header_lines_are_read_in_order() {
    let challenges = parse_all([r#"Basic realm="harbor""#, r#"Bearer realm="https://a/t""#]);

    let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
    assert_eq!(schemes, ["basic", "bearer"]);
}

#[test]
fn quoted_values_keep_commas_and_lose_escapes() {
    let challenges =
        parse(r#"Bearer realm="a,b", scope="repository:x:pull,push", error="say \"no\" \\ ok""#);

    assert_eq!(challenges.len(), 1);
    assert_eq!(challenges[0].realm(), Some("a,b"));
    assert_eq!(challenges[0].scope(), Some("repository:x:pull,push"));
    assert_eq!(challenges[0].error(), Some(r#"say "no" \ ok"#));
}

#[test]
fn unquoted_values_and_spaces_around_equals_are_accepted() {
    let challenges =
        parse("Bearer realm = https://auth.example/token , service=reg,error=invalid_token");

    assert_eq!(challenges[0].realm(), Some("https://auth.example/token"));
    assert_eq!(challenges[0].service(), Some("reg"));
    assert_eq!(challenges[0].error(), Some("invalid_token"));
}

#[test]
fn bare_schemes_and_token68_do_not_swallow_the_next_challenge() {
    let challenges = parse(r#"Negotiate abc==, Basic, Bearer realm="r""#);

    let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
    assert_eq!(schemes, ["negotiate", "basic", "bearer"]);
    assert_eq!(challenges[2].realm(), Some("r"));
}

#[test]
fn garbage_yields_no_or_partial_challenges() {
    assert_eq!(parse(""), Vec::new());
    assert_eq!(parse(" , ,, "), Vec::new());
    assert_eq!(parse("\"\"\"=,=="), Vec::new());

    let unterminated = parse(r#"Bearer realm="https://a/t, service="s"#);
    assert_eq!(unterminated[0].realm(), Some("https://a/t, service="));
    assert_eq!(unterminated[0].service(), None);

    let broken = parse("Bearer realm=\"r\" ))) service=\"s\"");
    assert_eq!(broken[0].realm(), Some("r"));
}

/// Pieces that stress the grammar: delimiters, escapes, scheme names, non-ASCII and controls.
const PIECES: &[&str] = &[
    "\"", "\\", ",", "=", " ", "\t", "Bearer", "basic", "realm", "scope", "error", "=\"", "\",",
    "a", "Z", "9", "-", ":", "/", "é", "漢", "\u{0}", "\r\n", "==", "\\\"", "token68~",
];

/// Parses one generated header value and checks what any parse must satisfy.
fn parse_garbage(rng: &mut Rng) {
    let input = garbage(rng, PIECES, 40);
    let challenges = parse(&input);

    assert!(challenges.len() <= input.chars().count(), "{input:?}");
    for challenge in &challenges {
        assert!(!challenge.scheme.is_empty(), "{input:?}");
        assert!(challenge.scheme.chars().all(is_token_char), "{input:?}");
        assert!(
            challenge.params.iter().all(|(name, _)| !name.is_empty()),
            "{input:?}"
        );
    }
}

#[test]
fn challenge_parser_never_panics_on_generated_input() {
    // A fixed seed first, so the same 30 000 cases run everywhere; then new ones for a bounded
    // time, seeded from the clock or `OCI_PROBE_FUZZ_SEED` to replay a printed failure.
    let mut rng = Rng(0x5eed_c4a1);
    for _ in 0..30_000 {
        parse_garbage(&mut rng);
    }

    fuzz_for(
        "challenge parser",
        Duration::from_millis(600),
        2_000_000,
        |rng| {
            for _ in 0..50 {
                parse_garbage(rng);
            }
        },
    );
}

const SCHEMES: &[&str] = &["Basic", "Bearer", "bearer", "BASIC", "Digest", "x-Custom"];
const NAMES: &[&str] = &["realm", "Service", "SCOPE", "error", "x_y", "a.b"];
const VALUE_CHARS: &[char] = &[
    'a', 'B', '0', ':', '/', ',', '=', ' ', '"', '\\', '.', '-', 'é', '\t',
];

fn random_value(rng: &mut Rng) -> String {
    (0..rng.below(12)).map(|_| *rng.pick(VALUE_CHARS)).collect()
}

/// Writes `value` quoted (escaping `"` and `\`) or, when it is a token and the coin says so, bare.
fn render_value(rng: &mut Rng, value: &str) -> String {
    if !value.is_empty() && value.chars().all(is_token_char) && rng.chance(2) {
        return value.to_string();
    }
    let escaped: String = value
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            other => vec![other],
        })
        .collect();
    format!("\"{escaped}\"")
}

fn random_challenge(rng: &mut Rng) -> (Challenge, String) {
    let scheme = rng.pick(SCHEMES).to_string();
    let mut text = scheme.clone();
    let mut params = Vec::new();

    for index in 0..rng.below(4) {
        let name = rng.pick(NAMES).to_string();
        let value = random_value(rng);
        let separator = if index == 0 {
            " "
        } else {
            rng.pick(&[",", ", ", " , "])
        };
        let equals = rng.pick(&["=", " = ", "= "]);
        text.push_str(&format!(
            "{separator}{name}{equals}{}",
            render_value(rng, &value)
        ));
        params.push((name.to_ascii_lowercase(), value));
    }
    let challenge = Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    };
    (challenge, text)
}

/// Renders one to three generated challenges, in one header or several, and parses them back.
fn round_trip(rng: &mut Rng) {
    let count = 1 + rng.below(3);
    let (expected, texts): (Vec<Challenge>, Vec<String>) =
        (0..count).map(|_| random_challenge(rng)).unzip();

    let parsed = if rng.chance(2) {
        parse(&texts.join(*rng.pick(&[", ", ",", " , "])))
    } else {
        parse_all(texts.iter().map(String::as_str))
    };

    assert_eq!(parsed, expected, "{texts:?}");
}

#[test]
fn generated_well_formed_challenges_parse_back_exactly() {
    let mut rng = Rng(0xc0ff_ee00_1234);
    for _ in 0..20_000 {
        round_trip(&mut rng);
    }

    fuzz_for(
        "challenge round trip",
        Duration::from_millis(400),
        2_000_000,
        |rng| {
            for _ in 0..50 {
                round_trip(rng);
            }
        },
    );
}
