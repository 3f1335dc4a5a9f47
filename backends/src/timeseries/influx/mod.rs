//! The production time-series store: InfluxDB over its HTTP API.
//!
//! **URL.** `influx://host:8086?db=sensors` writes line protocol to `/write?db=…` (v1).
//! With `&org=…&bucket=…` and a token ([`InfluxOptions::token`], else the
//! `SENSORFLEET_INFLUX_TOKEN` environment variable) writes go to `/api/v2/write`. Reads are
//! InfluxQL over `/query?db=…` in both cases: on InfluxDB 1.x natively, on 2.x through its
//! v1 compatibility API, which needs a DBRP mapping from the database name (`db=`, else the
//! bucket's name) to the bucket (`influx v1 dbrp create --db sensors --rp autogen
//! --bucket-id … --default`); 3.x serves `/query` too. See [`InfluxStore::connect`] for
//! every parameter. Plain HTTP only (no TLS in the client).
//!
//! **Schema** (DESIGN §3): measurement = device type; tags `device_id` and `location` (when
//! the reading has one); every field a float field; timestamp = reading time in
//! milliseconds. A replayed reading has the same series and timestamp, so it overwrites
//! itself: writes are idempotent. Line-protocol escaping and its two documented limits
//! (line feeds, trailing backslashes in tags) are in `influx/line.rs`. A field named
//! `time` cannot be stored in InfluxDB and is left out (logged per batch).
//!
//! **Rollups** live in the measurement [`ROLLUP_MEASUREMENT`]: tags `device_id` and `field`,
//! fields `count` (integer), `min`, `mean`, `max`, timestamp = the hour's start. InfluxDB
//! computes them (`GROUP BY time(1h), device_id`); the answer is streamed in pieces and
//! written back in batches, so memory stays bounded however long the range.
//!
//! **Batching.** [`TimeSeries::write`] gets a batch and sends it in requests of at most
//! `max_batch_lines` lines and `max_batch_bytes` bytes. Waiting to fill a batch (linger) is
//! the caller's concern: the bridge and the processor already batch.
//!
//! **Failures.** Connection errors, timeouts, HTTP 429 and 5xx are retried with
//! exponential backoff ([`RetryPolicy`]), then reported as [`BackendError::Unavailable`]
//! (the pipeline holds and retries the batch; writes are idempotent, so a request that
//! half-succeeded is harmless). Any other 4xx is [`BackendError::Rejected`], naming the
//! point InfluxDB complained about (device, time, type) when its message allows.
//!
//! **Where InfluxDB differs from the embedded store.** A series is (measurement, tags),
//! so a device that moved (new `location`) and sent the same instant from both places has
//! two points there: `history` and `count` show the instant once, an hourly rollup counts
//! both. `count` streams one row per distinct instant (`GROUP BY time(1ms)`): it is linear
//! in the readings, meant for checks and tests, and needs the server's
//! `max-select-buckets` left at its default (0, unlimited).

mod config;
mod line;
#[cfg(test)]
mod properties;
mod query;
mod write;

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sensorfleet_model::Reading;
use tracing::{debug, info, warn};

use self::config::Endpoint;
pub use self::config::{InfluxOptions, RetryPolicy, TOKEN_ENV};
pub use self::line::ROLLUP_MEASUREMENT;
use self::line::Skipped;
use self::query::Answer;
use self::write::describe;
use super::{HistoryQuery, Point, Rollup, TimeSeries};
use crate::BackendError;

const BACKEND: &str = "influxdb";
/// The most of an error answer kept: InfluxDB's messages are short; a proxy's HTML page
/// need not be read whole.
const MAX_ERROR_BODY: usize = 64 << 10;
/// The largest single piece of a streamed query answer accepted.
const MAX_ANSWER_PIECE: usize = 256 << 20;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The InfluxDB time-series store. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct InfluxStore {
    client: HttpClient,
    endpoint: Endpoint,
    retry: RetryPolicy,
    request_timeout: Duration,
    query_chunk_rows: usize,
}

impl std::fmt::Debug for InfluxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxStore")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Why one attempt at a request failed.
enum Failure {
    /// Worth another attempt.
    Transient {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The server refused the request (a 4xx other than 429).
    Refused { status: StatusCode, message: String },
    /// Final, already an error.
    Final(BackendError),
}

impl Failure {
    /// The error for everything but a refusal, which the caller words with its context.
    fn into_error(self, what: &str) -> BackendError {
        match self {
            Failure::Transient { detail, .. } => BackendError::Unavailable {
                backend: BACKEND,
                detail: format!("{what}: {detail}"),
            },
            Failure::Refused { status, message } => BackendError::Rejected {
                backend: BACKEND,
                detail: format!("{what}: HTTP {status}: {message}"),
            },
            Failure::Final(e) => e,
        }
    }
}

/// The error and its causes, `: `-joined (hyper's own message is only "client error").
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// The message of an error answer: InfluxDB 1.x says `{"error": …}`, 2.x
/// `{"code": …, "message": …}`; anything else is shown as text.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Option<String>,
        message: Option<String>,
    }
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error.or(b.message))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

fn retry_after(response: &Response<Incoming>) -> Option<Duration> {
    let seconds = response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// A streamed `/query` answer: one JSON document per line (`chunked=true`), read as the
/// bytes arrive so only one piece is held at a time.
struct AnswerStream {
    body: Incoming,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for a newline.
    scanned: usize,
    finished: bool,
    timeout: Duration,
    what: String,
}

impl AnswerStream {
    /// The next piece, or `None` at the end. A piece that reports an error (a bad statement,
    /// an unknown database) is `Rejected`; a connection lost mid-answer is `Unavailable`.
    async fn next(&mut self) -> Result<Option<Answer>, BackendError> {
        loop {
            if let Some(offset) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
                let piece: Vec<u8> = self.buffer.drain(..=self.scanned + offset).collect();
                self.scanned = 0;
                if piece.trim_ascii().is_empty() {
                    continue;
                }
                return self.parse(&piece).map(Some);
            }
            self.scanned = self.buffer.len();
            if self.finished {
                if self.buffer.trim_ascii().is_empty() {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.buffer);
                self.scanned = 0;
                return self.parse(&rest).map(Some);
            }
            let unavailable = |detail: String| BackendError::Unavailable {
                backend: BACKEND,
                detail: format!("{}: {detail}", self.what),
            };
            match tokio::time::timeout(self.timeout, self.body.frame()).await {
                Err(_) => {
                    return Err(unavailable(format!(
                        "the answer stalled for {:?}",
                        self.timeout
                    )));
                }
                Ok(None) => self.finished = true,
                Ok(Some(Err(e))) => return Err(unavailable(error_chain(&e))),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                    if self.buffer.len() > MAX_ANSWER_PIECE {
                        return Err(BackendError::Rejected {
                            backend: BACKEND,
                            detail: format!(
                                "{}: a piece of the answer exceeds {MAX_ANSWER_PIECE} bytes; \
                                 lower query_chunk_rows",
                                self.what
                            ),
                        });
                    }
                }
            }
        }
    }

    fn parse(&self, piece: &[u8]) -> Result<Answer, BackendError> {
        let answer: Answer = serde_json::from_slice(piece).map_err(|e| BackendError::Rejected {
            backend: BACKEND,
            detail: format!("{}: the answer is not InfluxDB's JSON: {e}", self.what),
        })?;
        match answer.error() {
            Some(error) => Err(BackendError::Rejected {
                backend: BACKEND,
                detail: format!("{}: {error}", self.what),
            }),
            None => Ok(answer),
        }
    }
}

impl InfluxStore {
    /// Connects to the InfluxDB at `url` and, for the v1 API, creates its database when
    /// missing (a user without that permission gets a warning and the database is assumed
    /// to exist); for the v2 API it checks `/ping`. Fails `Unavailable` when the server
    /// does not answer within the retry policy, `Rejected` when the URL is wrong.
    ///
    /// `influx://[user:password@]host[:port][/path]?…` (`http://` works too):
    ///
    /// | parameter | meaning |
    /// | --- | --- |
    /// | `db` | database (v1 writes, and the `/query` database); required without `org`/`bucket` |
    /// | `rp` | retention policy (v1 writes and queries); the database's default otherwise |
    /// | `org`, `bucket` | write with `/api/v2/write` (InfluxDB 2.x/3.x); needs a token; `db` defaults to the bucket |
    /// | `max_lines`, `max_bytes` | per-request batch limits (override the options) |
    /// | `precision` | only `ms` (the default): readings carry milliseconds, and a coarser precision would merge them |
    ///
    /// The port defaults to 8086. A token comes from `options.token`, else the
    /// `SENSORFLEET_INFLUX_TOKEN` environment variable, never from the URL; user and
    /// password in the URL are sent as HTTP Basic auth (InfluxDB 1.x with auth enabled).
    pub async fn connect(url: &str, options: InfluxOptions) -> Result<Self, BackendError> {
        let token = options
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok());
        let endpoint = Endpoint::parse(url, &options, token)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.set_nodelay(true);
        // TLS when the URL says so (`influxs://`), never a silent downgrade: an https
        // endpoint is only ever reached over TLS.
        let connector = crate::tls::https_connector(connector, endpoint.scheme == "https")
            .map_err(|detail| BackendError::Rejected {
                backend: BACKEND,
                detail: format!("InfluxDB over TLS: {detail}"),
            })?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let store = Self {
            client,
            endpoint,
            retry: RetryPolicy {
                max_attempts: options.retry.max_attempts.max(1),
                ..options.retry
            },
            request_timeout: options.request_timeout,
            query_chunk_rows: options.query_chunk_rows.max(1),
        };
        match store.endpoint.database_to_create() {
            Some(db) if options.create_database => store.create_database(db).await?,
            _ => store.ping().await?,
        }
        info!(
            server = %store.endpoint.authority,
            database = %store.endpoint.query_db,
            write_api = ?store.endpoint.write,
            "connected to InfluxDB"
        );
        Ok(store)
    }

    /// The database `/query` reads.
    pub fn database(&self) -> &str {
        &self.endpoint.query_db
    }

    async fn create_database(&self, db: &str) -> Result<(), BackendError> {
        let statement = query::create_database(db);
        let result = async {
            let mut answer = self.query(&statement, false).await?;
            while answer.next().await?.is_some() {}
            Ok(())
        }
        .await;
        match result {
            Err(BackendError::Rejected { detail, .. }) => {
                warn!(
                    database = db,
                    error = %detail,
                    "could not create the InfluxDB database (no permission?); assuming it exists"
                );
                Ok(())
            }
            other => other,
        }
    }

    async fn ping(&self) -> Result<(), BackendError> {
        let what = format!("pinging InfluxDB at {}", self.endpoint.authority);
        self.retrying(&what, || async {
            let request = self.endpoint.ping_request().map_err(Failure::Final)?;
            let response = self.send(request).await?;
            self.finish(response).await
        })
        .await
        .map_err(|f| f.into_error(&what))
    }

    /// Sends one request, waiting at most `request_timeout` for the answer's head.
    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Failure> {
        match tokio::time::timeout(self.request_timeout, self.client.request(request)).await {
            Err(_) => Err(Failure::Transient {
                detail: format!("no answer within {:?}", self.request_timeout),
                retry_after: None,
            }),
            Ok(Err(e)) => Err(Failure::Transient {
                detail: error_chain(&e),
                retry_after: None,
            }),
            Ok(Ok(response)) if response.status().is_success() => Ok(response),
            Ok(Ok(response)) => {
                let status = response.status();
                let retry_after = retry_after(&response);
                let body = tokio::time::timeout(
                    self.request_timeout,
                    Limited::new(response.into_body(), MAX_ERROR_BODY).collect(),
                )
                .await;
                let message = match body {
                    Ok(Ok(collected)) => error_message(&collected.to_bytes()),
                    _ => String::new(),
                };
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    Err(Failure::Transient {
                        detail: format!("HTTP {status}: {message}"),
                        retry_after,
                    })
                } else {
                    Err(Failure::Refused { status, message })
                }
            }
        }
    }

    /// Reads a successful answer's (small) body to its end, so the connection is reused.
    async fn finish(&self, response: Response<Incoming>) -> Result<(), Failure> {
        match tokio::time::timeout(
            self.request_timeout,
            Limited::new(response.into_body(), MAX_ERROR_BODY).collect(),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Failure::Transient {
                detail: format!("reading the answer: {e}"),
                retry_after: None,
            }),
            Err(_) => Err(Failure::Transient {
                detail: format!("the answer stalled for {:?}", self.request_timeout),
                retry_after: None,
            }),
        }
    }

    /// Runs `attempt` until it succeeds, is refused, or the retry policy is spent; a
    /// transient failure then becomes `Final(Unavailable)` saying how long it tried.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut backoff = self.retry.backoff();
        loop {
            let (detail, retry_after) = match attempt().await {
                Err(Failure::Transient {
                    detail,
                    retry_after,
                }) => (detail, retry_after),
                other => return other,
            };
            let delay = backoff.next_delay();
            let failures = backoff.failures();
            let wait = retry_after
                .map_or(delay, |after| after.max(delay))
                .min(self.retry.max_backoff);
            if failures >= self.retry.max_attempts
                || started.elapsed() + wait > self.retry.max_elapsed
            {
                return Err(Failure::Final(BackendError::Unavailable {
                    backend: BACKEND,
                    detail: format!(
                        "{what}: {detail} (gave up after {failures} attempt(s) in {:.1} s)",
                        started.elapsed().as_secs_f64()
                    ),
                }));
            }
            debug!(what, failures, error = %detail, ?wait, "InfluxDB request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends an InfluxQL statement; the answer streams (in pieces of `query_chunk_rows`
    /// rows when `chunked`).
    async fn query(&self, statement: &str, chunked: bool) -> Result<AnswerStream, BackendError> {
        let what = format!(
            "querying InfluxDB at {} (`{statement}`)",
            self.endpoint.authority
        );
        let chunk = chunked.then_some(self.query_chunk_rows);
        let response = self
            .retrying(&what, || async {
                let request = self
                    .endpoint
                    .query_request(statement, chunk)
                    .map_err(Failure::Final)?;
                self.send(request).await
            })
            .await
            .map_err(|f| f.into_error(&what))?;
        Ok(AnswerStream {
            body: response.into_body(),
            buffer: Vec::new(),
            scanned: 0,
            finished: false,
            timeout: self.request_timeout,
            what,
        })
    }
}

#[async_trait]
impl TimeSeries for InfluxStore {
    async fn write(&self, readings: &[Reading]) -> Result<(), BackendError> {
        // Refuse an unwritable reading before anything is sent, so a batch is never half
        // written because of its content.
        for reading in readings {
            if let Err(e) = line::check_reading(reading) {
                return Err(BackendError::Content {
                    backend: BACKEND,
                    detail: format!("{} cannot be written: {e}", describe(reading)),
                });
            }
        }
        let mut skipped = Skipped::default();
        let mut body = String::new();
        // (reading index, start of its line in `body`) for each line of the request.
        let mut lines: Vec<(usize, usize)> = Vec::new();
        for (index, reading) in readings.iter().enumerate() {
            let start = body.len();
            // Checked above, so this cannot fail; `?` keeps it honest if that changes.
            let left_out =
                line::push_reading(&mut body, reading).map_err(|e| BackendError::Rejected {
                    backend: BACKEND,
                    detail: format!("{} cannot be written: {e}", describe(reading)),
                })?;
            skipped.add(left_out);
            if body.len() == start {
                continue;
            }
            if !lines.is_empty() && self.batch_full(lines.len() + 1, body.len()) {
                let next = body.split_off(start);
                let full = std::mem::replace(&mut body, next);
                self.post_readings(full, &lines, readings).await?;
                lines.clear();
                lines.push((index, 0));
            } else {
                lines.push((index, start));
            }
        }
        if !lines.is_empty() {
            self.post_readings(body, &lines, readings).await?;
        }
        if !skipped.is_empty() {
            warn!(
                reserved_fields = skipped.reserved_fields,
                non_finite_fields = skipped.non_finite_fields,
                readings_without_fields = skipped.empty_readings,
                "InfluxDB cannot store some values of this batch (a field named `time`, NaN \
                 or infinity); they were left out"
            );
        }
        Ok(())
    }

    async fn history(&self, q: &HistoryQuery) -> Result<Vec<Point>, BackendError> {
        // LIMIT 0 means "no limit" to InfluxQL.
        if q.limit == 0 || q.since_ms >= q.until_ms {
            return Ok(Vec::new());
        }
        let mut answer = self.query(&query::history(q), true).await?;
        let mut points = Vec::new();
        while let Some(piece) = answer.next().await? {
            for series in piece.series() {
                match (q.rollup, series.is_rollup()) {
                    (false, false) => query::push_raw_points(series, &mut points),
                    (true, true) => query::push_rollup_points(series, &mut points),
                    _ => {}
                }
            }
        }
        Ok(query::newest(points, q.limit))
    }

    async fn rollup(&self, since_ms: i64, until_ms: i64) -> Result<u64, BackendError> {
        if since_ms >= until_ms {
            return Ok(0);
        }
        let mut answer = self
            .query(&query::hourly_aggregates(since_ms, until_ms), true)
            .await?;
        let mut body = String::new();
        let mut lines = 0usize;
        let mut written = 0u64;
        while let Some(piece) = answer.next().await? {
            for series in piece.series().filter(|s| !s.is_rollup()) {
                let Some(device_id) = series.tags.get("device_id").filter(|d| !d.is_empty()) else {
                    continue;
                };
                let layout = query::aggregate_columns(&series.columns);
                for (hour_ms, row) in series.rows() {
                    for aggregate in query::row_aggregates(&layout, row) {
                        let start = body.len();
                        line::push_rollup(
                            &mut body,
                            &Rollup {
                                device_id: device_id.clone(),
                                field: aggregate.field,
                                hour_ms,
                                count: aggregate.count,
                                min: aggregate.min,
                                mean: aggregate.mean,
                                max: aggregate.max,
                            },
                        );
                        if lines > 0 && self.batch_full(lines + 1, body.len()) {
                            let next = body.split_off(start);
                            let full = std::mem::replace(&mut body, next);
                            self.post_lines(Bytes::from(full))
                                .await
                                .map_err(|f| f.into_error("writing rollups"))?;
                            written += lines as u64;
                            lines = 0;
                        }
                        lines += 1;
                    }
                }
            }
        }
        if lines > 0 {
            self.post_lines(Bytes::from(body))
                .await
                .map_err(|f| f.into_error("writing rollups"))?;
            written += lines as u64;
        }
        Ok(written)
    }

    async fn count(
        &self,
        device_id: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64, BackendError> {
        if since_ms >= until_ms {
            return Ok(0);
        }
        // InfluxQL counts values per field, not readings; one row per distinct instant
        // (per measurement) is streamed and counted instead. Linear in the readings, which
        // is fine for what this is for: checks and tests.
        let statement = query::readings_per_instant(device_id, since_ms, until_ms);
        let mut answer = self.query(&statement, true).await?;
        let mut count = 0u64;
        while let Some(piece) = answer.next().await? {
            for series in piece.series().filter(|s| !s.is_rollup()) {
                count += series.rows().count() as u64;
            }
        }
        Ok(count)
    }

    fn name(&self) -> &'static str {
        BACKEND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_give_their_message() {
        assert_eq!(
            error_message(br#"{"error":"database not found"}"#),
            "database not found"
        );
        assert_eq!(
            error_message(br#"{"code":"invalid","message":"bad bucket"}"#),
            "bad bucket"
        );
        assert_eq!(
            error_message(b" <html>Bad Gateway</html>\n"),
            "<html>Bad Gateway</html>"
        );
    }
}
