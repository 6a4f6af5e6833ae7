//! The resource limits of one check run: what each is called in configuration, its default, and
//! how a tripped limit is named in the result.
//!
//! Every limit is a `Doctor:Limits:*` key, read once before any check runs so that a value that
//! does not parse is a configuration error (exit 2) rather than a surprise halfway through.
//! [`LIMIT_TABLE`] documents them all; a unit test keeps it in step with [`Limits::default`].

use std::fmt;
use std::time::Duration;

use crate::config::{ConfigError, Settings};

/// `Doctor:Limits:TimeoutSeconds`: the wall-clock budget of one run, unless `--timeout` is given.
pub const TIMEOUT_KEY: &str = "Doctor:Limits:TimeoutSeconds";
/// `Doctor:Limits:MemoryMiB`: the most linear memory one instance may grow to.
pub const MEMORY_KEY: &str = "Doctor:Limits:MemoryMiB";
/// `Doctor:Limits:TableElements`: the most elements one table may grow to.
pub const TABLE_ELEMENTS_KEY: &str = "Doctor:Limits:TableElements";
/// `Doctor:Limits:Instances`: the most core instances a run may create.
pub const INSTANCES_KEY: &str = "Doctor:Limits:Instances";
/// `Doctor:Limits:Tables`: the most tables a run may define.
pub const TABLES_KEY: &str = "Doctor:Limits:Tables";
/// `Doctor:Limits:Memories`: the most linear memories a run may define.
pub const MEMORIES_KEY: &str = "Doctor:Limits:Memories";
/// `Doctor:Limits:ResponseBodyBytes`: the most response body bytes handed to the check.
pub const RESPONSE_BODY_KEY: &str = "Doctor:Limits:ResponseBodyBytes";
/// `Doctor:Limits:RequestBodyBytes`: the largest request body the check may send.
pub const REQUEST_BODY_KEY: &str = "Doctor:Limits:RequestBodyBytes";
/// `Doctor:Limits:OutputBytes`: how much of each of stdout and stderr is kept.
pub const OUTPUT_KEY: &str = "Doctor:Limits:OutputBytes";
/// `Doctor:Limits:ConcurrentRequests`: the most outbound requests in flight at once.
pub const CONCURRENT_REQUESTS_KEY: &str = "Doctor:Limits:ConcurrentRequests";
/// `Doctor:Limits:HeaderBytes`: the largest header section a check may build or receive.
pub const HEADER_BYTES_KEY: &str = "Doctor:Limits:HeaderBytes";

/// One row of the limits documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    /// The configuration key.
    pub key: &'static str,
    /// The value used when the key is not set, in the key's unit.
    pub default: &'static str,
    /// What the check did when the limit trips.
    pub trips_when: &'static str,
    /// What the check and the operator see when it trips.
    pub reported_as: &'static str,
}

/// Every limit, its default, and how tripping it shows; the source of the README's table.
///
/// Each tripped limit also adds `limit_exceeded` evidence: `Key=value`, comma-separated when
/// more than one tripped in a run.
pub const LIMIT_TABLE: &[LimitSpec] = &[
    LimitSpec {
        key: TIMEOUT_KEY,
        default: "30",
        trips_when: "the run (instantiation, `run()` and every host call) takes longer; `--timeout` overrides it",
        reported_as: "fail: \"check exceeded its 30s deadline\"",
    },
    LimitSpec {
        key: MEMORY_KEY,
        default: "256",
        trips_when: "a linear memory would grow past this many MiB",
        reported_as: "trap; fail: \"check exceeded its memory limit (`Doctor:Limits:MemoryMiB` = 256)\"",
    },
    LimitSpec {
        key: TABLE_ELEMENTS_KEY,
        default: "100000",
        trips_when: "a table would grow past this many elements",
        reported_as: "trap; fail naming the key",
    },
    LimitSpec {
        key: INSTANCES_KEY,
        default: "64",
        trips_when: "instantiation would create more core instances",
        reported_as: "fail naming the key",
    },
    LimitSpec {
        key: TABLES_KEY,
        default: "64",
        trips_when: "instantiation would define more tables",
        reported_as: "fail naming the key",
    },
    LimitSpec {
        key: MEMORIES_KEY,
        default: "16",
        trips_when: "instantiation would define more linear memories",
        reported_as: "fail naming the key",
    },
    LimitSpec {
        key: RESPONSE_BODY_KEY,
        default: "1048576",
        trips_when: "a response body is longer",
        reported_as: "the check's body stream fails (`http-response-body-size`); evidence names the key",
    },
    LimitSpec {
        key: REQUEST_BODY_KEY,
        default: "65536",
        trips_when: "a request body (or its `content-length`) is longer",
        reported_as: "the request fails with `http-request-body-size`; evidence names the key",
    },
    LimitSpec {
        key: OUTPUT_KEY,
        default: "65536",
        trips_when: "the check writes more to stdout or stderr",
        reported_as: "the rest is dropped, the captured text ends with \"[output truncated …]\"; evidence names the key",
    },
    LimitSpec {
        key: CONCURRENT_REQUESTS_KEY,
        default: "4",
        trips_when: "one more request would be in flight (sent, response body not yet finished or dropped); it waits up to its connect timeout first",
        reported_as: "the request fails with `connection-limit-reached`; evidence names the key",
    },
    LimitSpec {
        key: HEADER_BYTES_KEY,
        default: "16384",
        trips_when: "headers the check builds (wasmtime's in-memory measure) or a response header section are larger",
        reported_as: "building: trap, fail naming the key; receiving: `http-response-header-section-size`, evidence names the key",
    },
];

/// Where the run's deadline came from, so a tripped deadline names the right knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutSource {
    /// `Doctor:Limits:TimeoutSeconds`, or its default.
    Setting,
    /// The `--timeout` option.
    Flag,
}

/// The limits every run of every check gets, parsed once from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The wall-clock budget of one run.
    pub timeout: Duration,
    /// Which knob set [`Limits::timeout`].
    pub timeout_source: TimeoutSource,
    /// Linear memory cap, in MiB.
    pub memory_mib: u64,
    /// Elements per table.
    pub table_elements: u64,
    /// Core instances per run.
    pub instances: u64,
    /// Tables per run.
    pub tables: u64,
    /// Linear memories per run.
    pub memories: u64,
    /// Response body bytes handed to the check, per response.
    pub response_body_bytes: u64,
    /// Request body bytes the check may send, per request.
    pub request_body_bytes: u64,
    /// Bytes kept of each of stdout and stderr.
    pub output_bytes: u64,
    /// Outbound requests in flight at once.
    pub concurrent_requests: u64,
    /// Header section size, in bytes.
    pub header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            timeout_source: TimeoutSource::Setting,
            memory_mib: 256,
            table_elements: 100_000,
            instances: 64,
            tables: 64,
            memories: 16,
            response_body_bytes: 1024 * 1024,
            request_body_bytes: 64 * 1024,
            output_bytes: 64 * 1024,
            concurrent_requests: 4,
            header_bytes: 16 * 1024,
        }
    }
}

impl Limits {
    /// Reads every `Doctor:Limits:*` key, using the default for those not set.
    ///
    /// A value that is not a whole number in the key's range is an error naming the key, the
    /// range and the value given.
    pub fn from_settings(settings: &Settings) -> Result<Limits, ConfigError> {
        let defaults = Limits::default();
        let read = |key: &str, default: u64, max: u64| read_whole(settings, key, default, max);
        Ok(Limits {
            timeout: Duration::from_secs(read(TIMEOUT_KEY, defaults.timeout.as_secs(), 86_400)?),
            timeout_source: TimeoutSource::Setting,
            memory_mib: read(MEMORY_KEY, defaults.memory_mib, 65_536)?,
            table_elements: read(TABLE_ELEMENTS_KEY, defaults.table_elements, 10_000_000)?,
            instances: read(INSTANCES_KEY, defaults.instances, 10_000)?,
            tables: read(TABLES_KEY, defaults.tables, 10_000)?,
            memories: read(MEMORIES_KEY, defaults.memories, 10_000)?,
            response_body_bytes: read(RESPONSE_BODY_KEY, defaults.response_body_bytes, 1 << 32)?,
            request_body_bytes: read(REQUEST_BODY_KEY, defaults.request_body_bytes, 1 << 32)?,
            output_bytes: read(OUTPUT_KEY, defaults.output_bytes, 64 << 20)?,
            concurrent_requests: read(CONCURRENT_REQUESTS_KEY, defaults.concurrent_requests, 1024)?,
            header_bytes: read(HEADER_BYTES_KEY, defaults.header_bytes, 16 << 20)?,
        })
    }

    /// These limits with the deadline the `--timeout` option gave.
    pub fn with_timeout_flag(mut self, timeout: Duration) -> Limits {
        self.timeout = timeout;
        self.timeout_source = TimeoutSource::Flag;
        self
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        to_usize(self.memory_mib.saturating_mul(1024 * 1024))
    }

    /// The value of a limit in its key's unit, for reports; `None` for an unknown key.
    pub fn value_of(&self, key: &str) -> Option<u64> {
        let value = match key {
            TIMEOUT_KEY => self.timeout.as_secs(),
            MEMORY_KEY => self.memory_mib,
            TABLE_ELEMENTS_KEY => self.table_elements,
            INSTANCES_KEY => self.instances,
            TABLES_KEY => self.tables,
            MEMORIES_KEY => self.memories,
            RESPONSE_BODY_KEY => self.response_body_bytes,
            REQUEST_BODY_KEY => self.request_body_bytes,
            OUTPUT_KEY => self.output_bytes,
            CONCURRENT_REQUESTS_KEY => self.concurrent_requests,
            HEADER_BYTES_KEY => self.header_bytes,
            _ => return None,
        };
        Some(value)
    }

    /// The record of `key` having tripped, with its configured value.
    pub fn hit(&self, key: &'static str) -> LimitHit {
        LimitHit {
            key,
            value: self
                .value_of(key)
                .map_or_else(String::new, |v| v.to_string()),
        }
    }
}

/// Saturates on 32-bit hosts, where a limit above the address space means "no limit" anyway.
pub fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// A whole number between 1 and `max` under `key`, or `default` when the key is unset.
pub(crate) fn read_whole(
    settings: &Settings,
    key: &str,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(text) = settings.get(key) else {
        return Ok(default);
    };
    match text.trim().parse::<u64>() {
        Ok(value) if (1..=max).contains(&value) => Ok(value),
        _ => Err(ConfigError::new(format!(
            "`{key}` must be a whole number between 1 and {max}, got {text:?}; remove it to use the default {default}"
        ))),
    }
}

/// One limit that tripped during a run: its key and the value it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    /// The `Doctor:Limits:*` key, or `--timeout`.
    pub key: &'static str,
    /// The configured value, in the key's unit.
    pub value: String,
}

impl LimitHit {
    /// The deadline, named after the knob that set it.
    pub fn deadline(limits: &Limits) -> LimitHit {
        match limits.timeout_source {
            TimeoutSource::Setting => limits.hit(TIMEOUT_KEY),
            TimeoutSource::Flag => LimitHit {
                key: "--timeout",
                value: crate::runner::format_duration(limits.timeout),
            },
        }
    }

    /// True for the limits whose trip traps the check (the limiter refuses a grow).
    pub fn is_fatal(&self) -> bool {
        matches!(self.key, MEMORY_KEY | TABLE_ELEMENTS_KEY)
    }

    /// What the limit guards, for a diagnosis: "memory limit", "response body limit", ….
    pub fn noun(&self) -> &'static str {
        match self.key {
            MEMORY_KEY => "memory limit",
            TABLE_ELEMENTS_KEY => "table size limit",
            INSTANCES_KEY => "instance count limit",
            TABLES_KEY => "table count limit",
            MEMORIES_KEY => "memory count limit",
            RESPONSE_BODY_KEY => "response body limit",
            REQUEST_BODY_KEY => "request body limit",
            OUTPUT_KEY => "output limit",
            CONCURRENT_REQUESTS_KEY => "concurrent request limit",
            HEADER_BYTES_KEY => "header size limit",
            _ => "deadline",
        }
    }

    /// The diagnosis of a run this limit stopped, naming the key and what to do.
    pub fn diagnosis(&self) -> String {
        format!(
            "check exceeded its {} (`{}` = {}); raise it only if the check legitimately needs more",
            self.noun(),
            self.key,
            self.value
        )
    }
}

impl fmt::Display for LimitHit {
    /// `Key=value`, the form of the `limit_exceeded` evidence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_are_the_real_defaults() {
        let defaults = Limits::default();
        for spec in LIMIT_TABLE {
            assert_eq!(
                defaults
                    .value_of(spec.key)
                    .map(|v| v.to_string())
                    .as_deref(),
                Some(spec.default),
                "{}",
                spec.key
            );
        }
        assert_eq!(LIMIT_TABLE.len(), 11, "every key is documented");
    }

    #[test]
    fn unset_keys_give_the_defaults() {
        assert_eq!(
            Limits::from_settings(&Settings::default()),
            Ok(Limits::default())
        );
    }

    #[test]
    fn keys_are_read_case_insensitively_in_their_unit() {
        let mut settings = Settings::default();
        settings.set("doctor:limits:memorymib", "64");
        settings.set("Doctor__Limits__ResponseBodyBytes", " 2048 ");
        settings.set("Doctor:Limits:TimeoutSeconds", "5");
        let limits = Limits::from_settings(&settings).unwrap();

        assert_eq!(limits.memory_bytes(), 64 * 1024 * 1024);
        assert_eq!(limits.response_body_bytes, 2048);
        assert_eq!(limits.timeout, Duration::from_secs(5));
        assert_eq!(
            limits.hit(MEMORY_KEY).to_string(),
            "Doctor:Limits:MemoryMiB=64"
        );
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key_and_value() {
        for bad in ["lots", "0", "-1", "1.5", ""] {
            let mut settings = Settings::default();
            settings.set(CONCURRENT_REQUESTS_KEY, bad);
            let err = Limits::from_settings(&settings).unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "`Doctor:Limits:ConcurrentRequests` must be a whole number between 1 and 1024"
                ),
                "{err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        let mut settings = Settings::default();
        settings.set(MEMORY_KEY, "65537");
        assert!(Limits::from_settings(&settings).is_err());
    }

    #[test]
    fn a_tripped_limit_names_its_key_and_value() {
        let limits = Limits::default();
        assert_eq!(
            limits.hit(MEMORY_KEY).diagnosis(),
            "check exceeded its memory limit (`Doctor:Limits:MemoryMiB` = 256); raise it only if the check legitimately needs more"
        );
        assert_eq!(
            LimitHit::deadline(&limits).to_string(),
            "Doctor:Limits:TimeoutSeconds=30"
        );
        let flagged = limits.with_timeout_flag(Duration::from_millis(1500));
        assert_eq!(LimitHit::deadline(&flagged).to_string(), "--timeout=1500ms");
    }
}
