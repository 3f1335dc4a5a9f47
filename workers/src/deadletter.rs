//! Dead letters: what the pipeline refuses goes to the dead-letter topic with its reason,
//! and a dead letter is never the reason the pipeline stops.
//!
//! [`DeadLetters::send`] appends to the event log's dead-letter topic, retrying a few
//! times over a second or so. A record the log refuses for its content (too large) is
//! sent again with its payload cut to [`TRUNCATED_PAYLOAD`] bytes (header `truncated`
//! = the original length). When the log stays unavailable, the records go to a bounded
//! local spool (a JSON-lines file of at most [`SpoolConfig::max_bytes`]) that every later
//! `send` tries to empty first. A record that fits nowhere is dropped, counted in
//! `sensorfleet_dead_letters_total{outcome="dropped"}` and logged: the very last resort,
//! never a crash loop.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sensorfleet_backends::{BackendError, EventLog, Record, Topic};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::sink::Bisection;
use crate::telemetry;

/// How much of a refused payload a dead letter keeps when the whole is refused.
pub const TRUNCATED_PAYLOAD: usize = 1024;
/// Attempts at the dead-letter topic before spooling.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Where dead letters wait while the event log is unavailable.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// The spool file (JSON lines).
    pub path: PathBuf,
    /// Its size cap in bytes; beyond it, dead letters are dropped (counted and logged).
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// `<dir>/sensorfleet-<name>-dead-letters.jsonl` with a 64 MiB cap; `dir` is
    /// `SENSORFLEET_SPOOL_DIR`, else the system's temporary directory.
    pub fn named(name: &str) -> Self {
        let dir = std::env::var_os("SENSORFLEET_SPOOL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            path: dir.join(format!("sensorfleet-{safe}-dead-letters.jsonl")),
            max_bytes: 64 << 20,
        }
    }
}

/// One spooled record.
#[derive(Serialize, Deserialize)]
struct SpoolLine {
    key: String,
    /// The payload in hex: it may be any bytes.
    payload: String,
    headers: Vec<(String, String)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The dead-letter writer of one component.
pub struct DeadLetters {
    component: &'static str,
    log: Arc<dyn EventLog>,
    spool: SpoolConfig,
}

impl DeadLetters {
    /// Dead letters of `component` to `log`, spooled at `spool` when it is down.
    pub fn new(component: &'static str, log: Arc<dyn EventLog>, spool: SpoolConfig) -> Self {
        Self {
            component,
            log,
            spool,
        }
    }

    /// Delivers `records` (and what the spool holds) to the dead-letter topic, or spools
    /// or drops them; never fails and never waits more than a few seconds.
    pub async fn send(&self, records: Vec<Record>) {
        self.drain_spool().await;
        if records.is_empty() {
            return;
        }
        let count = records.len() as u64;
        match self.deliver(records).await {
            Ok(delivered) => self.count("delivered", delivered),
            Err(undelivered) => {
                let spooled = undelivered.len() as u64;
                let dropped = self.spool_records(&undelivered);
                self.count("spooled", spooled - dropped);
                self.count("dropped", dropped);
                warn!(
                    component = self.component,
                    records = count,
                    spooled = spooled - dropped,
                    dropped,
                    spool = %self.spool.path.display(),
                    "the dead-letter topic is unavailable; spooled locally"
                );
            }
        }
    }

    fn count(&self, outcome: &str, n: u64) {
        if n > 0 {
            telemetry::DEAD_LETTERS
                .with_label_values(&[self.component, outcome])
                .inc_by(n);
        }
    }

    /// Appends with a few retries; a record refused for its content is isolated and sent
    /// truncated (or dropped). `Ok(delivered)`, or `Err(records)` when the log stayed
    /// unavailable.
    async fn deliver(&self, records: Vec<Record>) -> Result<u64, Vec<Record>> {
        let mut plan = Bisection::new(records.len());
        let mut delivered = 0u64;
        while let Some(range) = plan.next_range() {
            match self.append(records[range.clone()].to_vec()).await {
                Ok(()) => delivered += range.len() as u64,
                Err(e) if e.is_content() => {
                    if range.len() == 1 {
                        delivered += self.send_truncated(&records[range.start], &e).await;
                    }
                    plan.refused(range);
                }
                // Everything from here on: delivered again from the spool (a dead letter
                // may arrive twice, never not at all).
                Err(_) => return Err(records[range.start..].to_vec()),
            }
        }
        Ok(delivered)
    }

    async fn append(&self, records: Vec<Record>) -> Result<(), BackendError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.log.append(Topic::DeadLetter, records.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_content() || attempt >= ATTEMPTS => return Err(e),
                Err(BackendError::Closed(name)) => return Err(BackendError::Closed(name)),
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Sends a record the log refused whole with its payload cut short; 1 if delivered.
    async fn send_truncated(&self, record: &Record, refusal: &BackendError) -> u64 {
        let mut short = record.clone();
        short.payload.truncate(TRUNCATED_PAYLOAD);
        short
            .headers
            .push(("truncated".to_owned(), record.payload.len().to_string()));
        for (_, value) in &mut short.headers {
            if value.len() > TRUNCATED_PAYLOAD {
                let mut end = TRUNCATED_PAYLOAD;
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                value.truncate(end);
            }
        }
        match self.append(vec![short]).await {
            Ok(()) => 1,
            Err(e) => {
                self.count("dropped", 1);
                error!(
                    component = self.component,
                    key = %record.key,
                    refusal = %refusal,
                    error = %e,
                    "a dead letter was refused even truncated; dropped"
                );
                0
            }
        }
    }

    /// Appends to the spool file within its cap; returns how many were dropped.
    fn spool_records(&self, records: &[Record]) -> u64 {
        let used = std::fs::metadata(&self.spool.path).map_or(0, |m| m.len());
        let mut lines = Vec::new();
        let mut dropped = 0u64;
        for record in records {
            let line = SpoolLine {
                key: record.key.clone(),
                payload: hex(&record.payload),
                headers: record.headers.clone(),
            };
            let Ok(mut text) = serde_json::to_vec(&line) else {
                dropped += 1;
                continue;
            };
            text.push(b'\n');
            if used + (lines.len() + text.len()) as u64 > self.spool.max_bytes {
                dropped += 1;
                continue;
            }
            lines.extend_from_slice(&text);
        }
        if dropped > 0 {
            error!(
                component = self.component,
                dropped,
                spool = %self.spool.path.display(),
                cap_bytes = self.spool.max_bytes,
                "the dead-letter spool is full; dead letters dropped"
            );
        }
        if lines.is_empty() {
            return dropped;
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spool.path)
            .and_then(|mut file| file.write_all(&lines));
        if let Err(e) = written {
            let lost = (records.len() as u64) - dropped;
            error!(
                component = self.component,
                error = %e,
                dropped = lost,
                spool = %self.spool.path.display(),
                "cannot write the dead-letter spool; dead letters dropped"
            );
            return records.len() as u64;
        }
        dropped
    }

    /// Sends what the spool holds; empties it once delivered.
    async fn drain_spool(&self) {
        let Some(records) = read_spool(&self.spool.path) else {
            return;
        };
        if records.is_empty() {
            let _ = std::fs::remove_file(&self.spool.path);
            return;
        }
        let count = records.len();
        if let Ok(delivered) = self.deliver(records).await {
            if let Err(e) = std::fs::remove_file(&self.spool.path) {
                warn!(error = %e, spool = %self.spool.path.display(), "cannot remove the emptied dead-letter spool");
            }
            self.count("delivered", delivered);
            info!(
                component = self.component,
                records = count,
                "the dead-letter spool is delivered"
            );
        }
    }
}

/// The records of a spool file (lines that do not parse are skipped), or `None` without
/// a file.
fn read_spool(path: &Path) -> Option<Vec<Record>> {
    let file = std::fs::File::open(path).ok()?;
    let records = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<SpoolLine>(&line).ok())
        .filter_map(|line| {
            Some(Record {
                key: line.key,
                payload: unhex(&line.payload)?,
                headers: line.headers,
            })
        })
        .collect();
    Some(records)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use sensorfleet_backends::LogConsumer;

    use super::*;

    /// A dead-letter topic that can be down, and refuses payloads over 2 KiB.
    #[derive(Default)]
    struct FlakyLog {
        down: AtomicBool,
        stored: Mutex<Vec<Record>>,
    }

    #[async_trait]
    impl EventLog for FlakyLog {
        async fn append(&self, _: Topic, records: Vec<Record>) -> Result<(), BackendError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(BackendError::Unavailable {
                    backend: "flaky",
                    detail: "down".into(),
                });
            }
            if records.iter().any(|r| r.payload.len() > 2048) {
                return Err(BackendError::Content {
                    backend: "flaky",
                    detail: "record too large".into(),
                });
            }
            self.stored.lock().expect("lock").extend(records);
            Ok(())
        }

        async fn subscribe(&self, _: Topic, _: &str) -> Result<Box<dyn LogConsumer>, BackendError> {
            Err(BackendError::Closed("flaky"))
        }

        async fn tail(&self, _: Topic) -> Result<Box<dyn LogConsumer>, BackendError> {
            Err(BackendError::Closed("flaky"))
        }

        fn name(&self) -> &'static str {
            "flaky"
        }
    }

    fn record(key: &str, size: usize) -> Record {
        Record {
            key: key.to_owned(),
            payload: vec![0xff; size],
            headers: vec![("reason".to_owned(), "bad_text".to_owned())],
        }
    }

    fn keys(log: &FlakyLog) -> Vec<String> {
        log.stored
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.key.clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn down_means_spooled_then_delivered_when_back_and_the_cap_drops_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Arc::new(FlakyLog::default());
        let spool = SpoolConfig {
            path: dir.path().join("spool.jsonl"),
            max_bytes: 1000,
        };
        let letters = DeadLetters::new("test", log.clone(), spool.clone());
        log.down.store(true, Ordering::SeqCst);
        // Non-UTF-8 payloads survive the spool; 2 × ~230 bytes fit in 1000, a third of
        // ~600 does not.
        letters.send(vec![record("a", 100), record("b", 100)]).await;
        letters.send(vec![record("c", 300)]).await;
        let spooled = read_spool(&spool.path).expect("a spool file");
        assert_eq!(spooled.len(), 2, "the third is over the cap");
        assert_eq!(spooled[0].payload, vec![0xff; 100]);
        assert!(std::fs::metadata(&spool.path).expect("file").len() <= 1000);

        log.down.store(false, Ordering::SeqCst);
        letters.send(vec![record("d", 10)]).await;
        assert_eq!(keys(&log), ["a", "b", "d"], "spool first, then the new one");
        assert!(!spool.path.exists(), "the delivered spool is removed");
    }

    #[tokio::test]
    async fn a_record_too_large_goes_truncated_and_the_others_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Arc::new(FlakyLog::default());
        let letters = DeadLetters::new(
            "test",
            log.clone(),
            SpoolConfig {
                path: dir.path().join("spool.jsonl"),
                max_bytes: 1 << 20,
            },
        );
        letters
            .send(vec![
                record("a", 10),
                record("big", 10_000),
                record("c", 10),
            ])
            .await;
        let stored = log.stored.lock().expect("lock").clone();
        let keys: Vec<&str> = stored.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "big", "c"]);
        assert_eq!(stored[1].payload.len(), TRUNCATED_PAYLOAD);
        assert!(
            stored[1]
                .headers
                .contains(&("truncated".to_owned(), "10000".to_owned()))
        );
        assert!(!dir.path().join("spool.jsonl").exists(), "nothing spooled");
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
