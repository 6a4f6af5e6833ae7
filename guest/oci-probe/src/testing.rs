//! Test support: a scripted registry that records what it was sent, a clock the script can move
//! forward, and a small generator for the generated-input tests.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::{Credentials, Secret};
use crate::base64;
use crate::config::ProbeConfig;
use crate::http::{Request, Response, Transport, TransportError};
use crate::url::Url;

/// The password every test configuration uses, searched for in serialised results.
pub const PASSWORD: &str = "pa55-w0rd-SECRET";

/// `base64("robot:pa55-w0rd-SECRET")`, the `Authorization` value that must never leak either.
pub const BASIC_VALUE: &str = "cm9ib3Q6cGE1NS13MHJkLVNFQ1JFVA==";

thread_local! {
    // Each test runs on its own thread, so each has its own clock.
    static CLOCK_START: Instant = Instant::now();
    static CLOCK_OFFSET: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// A clock for [`crate::auth::Auth::with_clock`] that stands still until a [`FakeRegistry`]
/// answer moves it (see [`FakeRegistry::taking`]).
pub fn clock() -> Instant {
    CLOCK_START.with(|start| *start) + CLOCK_OFFSET.with(Cell::get)
}

fn advance_clock(by: Duration) {
    CLOCK_OFFSET.with(|offset| offset.set(offset.get() + by));
}

/// One scripted answer and how long it takes to arrive on the test [`clock`].
#[derive(Clone)]
struct Scripted {
    answer: Result<Response, TransportError>,
    takes: Duration,
}

/// A transport that replays scripted answers in order and records every request.
#[derive(Default, Clone)]
pub struct FakeRegistry {
    answers: VecDeque<Scripted>,
    /// Every request sent, in order.
    pub requests: Vec<Request>,
}

impl FakeRegistry {
    pub fn new() -> Self {
        FakeRegistry::default()
    }

    /// Queues an HTTP answer.
    pub fn answer(self, status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        self.reply(Ok(Response {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }))
    }

    /// Queues a transport failure.
    pub fn fail(self, error: TransportError) -> Self {
        self.reply(Err(error))
    }

    /// Queues any answer, including bodies that are not text.
    pub fn reply(mut self, answer: Result<Response, TransportError>) -> Self {
        self.answers.push_back(Scripted {
            answer,
            takes: Duration::ZERO,
        });
        self
    }

    /// Makes the answer queued last arrive `duration` later on the test [`clock`].
    pub fn taking(mut self, duration: Duration) -> Self {
        if let Some(last) = self.answers.back_mut() {
            last.takes = duration;
        }
        self
    }
}

impl Transport for FakeRegistry {
    fn send(&mut self, req: &Request) -> Result<Response, TransportError> {
        self.requests.push(req.clone());
        let Some(scripted) = self.answers.pop_front() else {
            return Err(TransportError::Other("no scripted answer left".into()));
        };
        advance_clock(scripted.takes);
        scripted.answer
    }
}

/// Basic credentials for `robot` against `https://registry.example`.
pub fn config() -> ProbeConfig {
    ProbeConfig {
        registry: Url::parse_registry("registry.example").unwrap(),
        repository: "stellaops/doctor-test".into(),
        credentials: Credentials::Basic {
            username: "robot".into(),
            password: Secret::new(PASSWORD),
        },
        timeout: Duration::from_secs(10),
    }
}

/// An unsigned JWT with `payload` as its claims, as a token server would issue one.
pub fn jwt(payload: &serde_json::Value) -> String {
    let part = |bytes: &[u8]| {
        base64::encode(bytes)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        part(br#"{"alg":"ES256","typ":"JWT"}"#),
        part(payload.to_string().as_bytes())
    )
}

/// A small deterministic generator (SplitMix64): the same cases for the same seed on every
/// machine, so a failure reproduces, with no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// The environment variable that replays a generated case: set it to the seed a failure printed.
pub const FUZZ_SEED_VARIABLE: &str = "OCI_PROBE_FUZZ_SEED";

/// Runs `case` on freshly seeded generators until `budget` has passed (at least once, at most
/// `max_cases` times).
///
/// The first case uses the seed from [`FUZZ_SEED_VARIABLE`] (decimal or `0x` hex) or else one
/// from the clock, so every run explores new input; each later case gets a seed drawn from the
/// first. The base seed is printed, and a failing case prints its own seed, so setting the
/// variable to it replays exactly that case first.
pub fn fuzz_for(name: &str, budget: Duration, max_cases: u64, mut case: impl FnMut(&mut Rng)) {
    let base = fuzz_seed();
    eprintln!("{name}: base seed {base:#x} (replay: {FUZZ_SEED_VARIABLE}={base:#x})");
    let started = Instant::now();
    let mut seeds = Rng(base);
    let mut seed = base;
    let mut cases = 0;

    while cases == 0 || (cases < max_cases && started.elapsed() < budget) {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| case(&mut Rng(seed))));
        if let Err(panic) = outcome {
            eprintln!("{name}: case {cases} failed; replay it with {FUZZ_SEED_VARIABLE}={seed:#x}");
            panic::resume_unwind(panic);
        }
        cases += 1;
        seed = seeds.next();
    }
    eprintln!("{name}: {cases} generated cases passed");
}

fn fuzz_seed() -> u64 {
    let Ok(text) = std::env::var(FUZZ_SEED_VARIABLE) else {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        return now.as_nanos() as u64;
    };
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| {
        panic!("{FUZZ_SEED_VARIABLE}={text:?} is not a number; use decimal or 0x-prefixed hex")
    })
}

/// Fewer than `max_pieces` of `pieces` run together, with now and then any character below U+3000
/// (controls, non-ASCII, surrogate-free), for inputs that stress a grammar.
pub fn garbage(rng: &mut Rng, pieces: &[&str], max_pieces: usize) -> String {
    (0..rng.below(max_pieces))
        .map(|_| {
            if rng.chance(8) {
                char::from_u32(rng.below(0x3000) as u32).map_or(String::new(), String::from)
            } else {
                rng.pick(pieces).to_string()
            }
        })
        .collect()
}
