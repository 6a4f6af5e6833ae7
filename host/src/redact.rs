//! Secret redaction: the one place secret values are removed from what the host shows.
//!
//! A check may echo anything it was given, so the host does not trust it to keep secrets out of
//! its result. Every result and every captured output goes through [`Redactor`] before it is
//! formatted, whatever the output format, and every log line goes through [`LogSecrets`] on its
//! way to stderr.
//!
//! Matching ignores ASCII case: the host itself lowercases host names (a request to
//! `http://<secret>.example/` is recorded as a lowercased origin), and a check may change the
//! case of what it echoes just as easily as it echoes it.

use std::io;
use std::sync::{Arc, LazyLock, RwLock};

use tracing_subscriber::fmt::MakeWriter;

use crate::model::{CheckResult, Evidence};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Replaces known secret values with [`MASK`], ignoring ASCII case.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// ASCII-lowercased, longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these secret values; empty values are ignored.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_ascii_lowercase())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn text(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            text = mask_ignoring_ascii_case(&text, secret);
        }
        text
    }

    /// `bytes`, decoded lossily and redacted, where `bytes` are the start of a longer output
    /// that a limit cut off.
    ///
    /// A secret the cut went through has only its beginning here, which [`Redactor::text`]
    /// would not recognise; any end of `bytes` that begins a secret is masked as well, so no
    /// part of a secret survives the cut. That may mask a few innocent bytes before the cut.
    pub fn cut_off(&self, bytes: &[u8]) -> String {
        let mut kept = bytes;
        let mut masked_tail = false;
        while let Some(length) = self.longest_secret_start_at_end(kept) {
            kept = &kept[..kept.len() - length];
            masked_tail = true;
        }
        let mut text = self.text(&String::from_utf8_lossy(kept));
        if masked_tail {
            text.push_str(MASK);
        }
        text
    }

    /// The length of the longest end of `bytes` that is the beginning (not the whole) of a
    /// secret.
    fn longest_secret_start_at_end(&self, bytes: &[u8]) -> Option<usize> {
        self.secrets
            .iter()
            .filter_map(|secret| {
                let secret = secret.as_bytes();
                let longest = secret.len().saturating_sub(1).min(bytes.len());
                (1..=longest).rev().find(|&length| {
                    bytes[bytes.len() - length..].eq_ignore_ascii_case(&secret[..length])
                })
            })
            .max()
    }

    /// Redacts every text field of a result in place.
    pub fn result(&self, result: &mut CheckResult) {
        result.diagnosis = self.text(&result.diagnosis);
        result.evidence = Evidence(
            result
                .evidence
                .iter()
                .map(|(key, value)| (self.text(key), self.text(value)))
                .collect(),
        );
        for cause in &mut result.likely_causes {
            *cause = self.text(cause);
        }
        for step in &mut result.remediation {
            step.title = self.text(&step.title);
            for command in &mut step.commands {
                *command = self.text(command);
            }
        }
        if let Some(command) = &mut result.verification_command {
            *command = self.text(command);
        }
    }

    /// A redactor for the secrets of both.
    fn union(&self, other: &Redactor) -> Redactor {
        Redactor::new(self.secrets.iter().chain(&other.secrets).cloned())
    }

    /// True when every secret of `other` is one of ours.
    fn covers(&self, other: &Redactor) -> bool {
        other
            .secrets
            .iter()
            .all(|secret| self.secrets.contains(secret))
    }
}

/// `text` with every occurrence of `lower_secret` (ASCII-lowercase) replaced by [`MASK`],
/// ignoring ASCII case.
///
/// ASCII lowercasing changes no byte length and no character boundary, so an offset found in
/// the lowercased copy is an offset in `text` too.
fn mask_ignoring_ascii_case(text: &str, lower_secret: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if !lower.contains(lower_secret) {
        return text.to_string();
    }
    let mut masked = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, _) in lower.match_indices(lower_secret) {
        masked.push_str(&text[copied..start]);
        masked.push_str(MASK);
        copied = start + lower_secret.len();
    }
    masked.push_str(&text[copied..]);
    masked
}

/// The secrets the host's log writer removes from every line, learnt as the host goes: the
/// configuration's secrets once it is read, and those the loaded checks declare before each
/// batch of runs.
///
/// Logs are written from many places (the sandbox, the outbound client, wasmtime, hyper), and
/// some of them print what a check handed the host: a configuration key name it asked for, the
/// host of a URL it requested. Redacting at the writer covers all of them, including lines
/// nobody thought of.
#[derive(Debug, Clone, Default)]
pub struct LogSecrets {
    redactor: Arc<RwLock<Arc<Redactor>>>,
}

impl LogSecrets {
    /// The process's log secrets, which the host's logger uses.
    pub fn global() -> &'static LogSecrets {
        static GLOBAL: LazyLock<LogSecrets> = LazyLock::new(LogSecrets::default);
        &GLOBAL
    }

    /// Adds the secrets of `redactor`, each also as a log line shows it: logged text values
    /// are escaped (`\"`, `\\`, `\n`), and an escaped secret no longer matches itself.
    pub fn protect(&self, redactor: &Redactor) {
        // The service calls this on every request with secrets it usually knows already; a
        // secret's escaped form is always added with it, so the raw ones decide.
        if self.current().covers(redactor) {
            return;
        }
        let escaped = redactor.secrets.iter().filter_map(|secret| {
            let debug = format!("{secret:?}");
            let escaped = &debug[1..debug.len() - 1];
            (escaped != secret).then(|| escaped.to_string())
        });
        let added = Redactor::new(redactor.secrets.iter().cloned().chain(escaped));
        let mut current = self.redactor.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(current.union(&added));
    }

    fn current(&self) -> Arc<Redactor> {
        self.redactor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A [`MakeWriter`] for `tracing_subscriber` that writes each log line to `inner`'s writer
    /// with these secrets masked.
    pub fn writer<M>(&self, inner: M) -> RedactingMakeWriter<M> {
        RedactingMakeWriter {
            secrets: self.clone(),
            inner,
        }
    }
}

/// Makes [`RedactedLine`] writers; see [`LogSecrets::writer`].
#[derive(Debug)]
pub struct RedactingMakeWriter<M> {
    secrets: LogSecrets,
    inner: M,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactedLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedLine {
            buffer: Vec::new(),
            redactor: self.secrets.current(),
            inner: self.inner.make_writer(),
        }
    }
}

/// One log event on its way out: collected whole, because a secret split across two writes
/// would match neither, then redacted and written when the formatter drops it.
pub struct RedactedLine<W: io::Write> {
    buffer: Vec<u8>,
    redactor: Arc<Redactor>,
    inner: W,
}

impl<W: io::Write> io::Write for RedactedLine<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    /// Nothing to do yet: the line is written once complete, on drop.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: io::Write> Drop for RedactedLine<W> {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let line = self.redactor.text(&String::from_utf8_lossy(&self.buffer));
        // A log line that cannot be written has nowhere else to go.
        let _ = self.inner.write_all(line.as_bytes());
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::model::{RemediationStep, Severity};

    fn redactor() -> Redactor {
        let mut settings = Settings::default();
        settings.set("OCI:Username", "alice");
        settings.set("OCI:Password", "hunter2");
        Redactor::new(settings.secret_values([]))
    }

    #[test]
    fn every_field_of_a_result_is_redacted_including_basic_auth() {
        let mut evidence = Evidence::default();
        evidence.push("authorization", "Basic YWxpY2U6aHVudGVyMg==");
        evidence.push("password_hunter2", "hunter2");
        let mut result = CheckResult {
            severity: Severity::Fail,
            diagnosis: "login with hunter2 failed".into(),
            evidence,
            likely_causes: vec!["password hunter2 expired".into()],
            remediation: vec![RemediationStep {
                title: "reset hunter2".into(),
                commands: vec!["docker login -p hunter2".into()],
            }],
            verification_command: Some("stella-doctor run --set OCI:Password=hunter2".into()),
        };

        redactor().result(&mut result);

        let all = format!("{result:?}");
        assert!(!all.contains("hunter2"), "{all}");
        assert!(!all.contains("YWxpY2U6aHVudGVyMg"), "{all}");
        assert_eq!(result.diagnosis, "login with *** failed");
        assert_eq!(result.evidence.0[0].1, "Basic ***");
        assert_eq!(result.evidence.0[1].0, "password_***");
    }

    #[test]
    fn longer_secrets_are_replaced_before_their_substrings() {
        let redactor = Redactor::new(["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(redactor.text("xabcdefx abc"), "x***x ***");
    }

    #[test]
    fn username_alone_is_not_a_secret() {
        assert_eq!(redactor().text("user alice"), "user alice");
    }

    #[test]
    fn a_secret_is_found_in_any_ascii_case() {
        let redactor = Redactor::new(["Hunter2-Sécret".to_string()]);
        assert_eq!(
            redactor.text("denied http://hunter2-sécret.example, HUNTER2-SéCRET, Hunter2-Sécret"),
            "denied http://***.example, ***, ***"
        );
        // Only ASCII case is ignored; the host never changes the case of anything else.
        assert_eq!(redactor.text("hunter2-sÉcret"), "hunter2-sÉcret");
    }

    #[test]
    fn a_secret_cut_off_by_a_limit_leaves_no_beginning_behind() {
        let redactor = Redactor::new(["hunter2".to_string()]);

        assert_eq!(
            redactor.cut_off(b"output hunter2 and HUNT"),
            "output *** and ***"
        );
        assert_eq!(redactor.cut_off(b"output h"), "output ***");
        // An end that begins no secret is kept as it is.
        assert_eq!(redactor.cut_off(b"output x"), "output x");
        // A whole secret at the very end is an ordinary match.
        assert_eq!(redactor.cut_off(b"output hunter2"), "output ***");
    }

    #[test]
    fn a_cut_through_one_secret_cannot_uncover_another() {
        // Masking the beginning of `2xyz` leaves `hunter` at the end, which begins `hunter2`.
        let redactor = Redactor::new(["hunter2".to_string(), "2xyz".to_string()]);
        assert_eq!(redactor.cut_off(b"a hunter2"), "a ***");
        assert_eq!(redactor.cut_off(b"a hunter2x"), "a ***");
    }

    #[test]
    fn a_cut_through_a_multibyte_character_is_still_masked() {
        let redactor = Redactor::new(["pässword".to_string()]);
        let bytes = "log pässword".as_bytes();
        // Cut between the two bytes of `ä`.
        assert_eq!(redactor.cut_off(&bytes[..6]), "log ***");
    }

    #[test]
    fn log_lines_are_redacted_whole_and_in_their_escaped_form() {
        let secrets = LogSecrets::default();
        secrets.protect(&Redactor::new(["Pa\"ss-Word".to_string()]));
        let sink = SharedSink::default();
        let writer = secrets.writer(sink.clone());

        {
            use std::io::Write as _;
            let mut line = writer.make_writer();
            // Split across writes, as a formatter may write a line.
            line.write_all(b"key=\"pa\\\"ss").unwrap();
            line.write_all(b"-word\" host=PA\"SS-WORD.example\n")
                .unwrap();
            line.flush().unwrap();
            assert!(
                sink.text().is_empty(),
                "nothing is written before the line is complete"
            );
        }

        assert_eq!(sink.text(), "key=\"***\" host=***.example\n");
    }

    #[test]
    fn secrets_learnt_later_apply_to_later_lines() {
        let secrets = LogSecrets::default();
        let sink = SharedSink::default();
        let writer = secrets.writer(sink.clone());
        let log = |text: &str| {
            use std::io::Write as _;
            writer.make_writer().write_all(text.as_bytes()).unwrap();
        };

        log("a s3cret\n");
        secrets.protect(&Redactor::new(["s3cret".to_string()]));
        secrets.protect(&Redactor::new(["s3cret".to_string()]));
        log("b s3cret\n");

        assert_eq!(sink.text(), "a s3cret\nb ***\n");
        assert_eq!(secrets.current().secrets, ["s3cret"]);
    }

    /// A log destination the test can read back.
    #[derive(Clone, Default)]
    struct SharedSink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl SharedSink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl io::Write for SharedSink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for SharedSink {
        type Writer = SharedSink;

        fn make_writer(&'a self) -> SharedSink {
            self.clone()
        }
    }
}
