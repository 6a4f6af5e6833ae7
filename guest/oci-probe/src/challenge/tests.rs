//! The challenge parser against real registry headers, hand-picked edge cases and generated input.

use super::*;

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

/// A small deterministic generator (SplitMix64): the same cases on every run and machine, so a
/// failure reproduces, with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Pieces that stress the grammar: delimiters, escapes, scheme names, non-ASCII and controls.
const PIECES: &[&str] = &[
    "\"", "\\", ",", "=", " ", "\t", "Bearer", "basic", "realm", "scope", "error", "=\"", "\",",
    "a", "Z", "9", "-", ":", "/", "é", "漢", "\u{0}", "\r\n", "==", "\\\"", "token68~",
];

fn garbage(rng: &mut Rng) -> String {
    let length = rng.below(40);
    (0..length)
        .map(|_| {
            if rng.chance(8) {
                char::from_u32(rng.below(0x3000) as u32).map_or(String::new(), String::from)
            } else {
                rng.pick(PIECES).to_string()
            }
        })
        .collect()
}

#[test]
fn challenge_parser_never_panics_on_generated_input() {
    let mut rng = Rng(0x5eed_c4a1);

    for _ in 0..30_000 {
        let input = garbage(&mut rng);
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

#[test]
fn generated_well_formed_challenges_parse_back_exactly() {
    let mut rng = Rng(0xc0ff_ee00_1234);

    for _ in 0..20_000 {
        let count = 1 + rng.below(3);
        let (expected, texts): (Vec<Challenge>, Vec<String>) =
            (0..count).map(|_| random_challenge(&mut rng)).unzip();

        let parsed = if rng.chance(2) {
            parse(&texts.join(*rng.pick(&[", ", ",", " , "])))
        } else {
            parse_all(texts.iter().map(String::as_str))
        };

        assert_eq!(parsed, expected, "{texts:?}");
    }
}
