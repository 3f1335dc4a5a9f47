//! Where InfluxDB is and how to talk to it: the `influx://` URL, the options, and the
//! HTTP requests built from them (pure, so their shape is tested without a server).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request};
use http_body_util::Full;
use url::Url;
use url::form_urlencoded;

use crate::BackendError;
use crate::backoff::Backoff;

use super::BACKEND;

/// The environment variable read for the API token when [`InfluxOptions::token`] is unset.
pub const TOKEN_ENV: &str = "SENSORFLEET_INFLUX_TOKEN";

const DEFAULT_PORT: u16 = 8086;

/// How hard to retry a request that failed transiently (connection refused or reset,
/// timeout, HTTP 429 or 5xx): exponential backoff, bounded both in attempts and in time.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub first_backoff: Duration,
    /// The longest single wait (also caps a server's `Retry-After`).
    pub max_backoff: Duration,
    /// No new attempt starts once this much time has passed since the first.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, waiting 100 ms, 200 ms, 400 ms, within 10 s: a restarting server or a
    /// dropped keep-alive connection is ridden over; a server that stays down is reported
    /// quickly, and the caller (the bridge, the processor) holds and retries the batch.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The waits after each failure: `first_backoff` doubling to at most `max_backoff`.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.first_backoff, self.max_backoff)
    }
}

/// Settings of an [`InfluxStore`](super::InfluxStore) beyond its URL.
#[derive(Clone)]
pub struct InfluxOptions {
    /// API token (`Authorization: Token …`): required with `org`/`bucket` (the v2 write
    /// API), also sent to the v1 endpoints (InfluxDB 2.x/3.x compatibility APIs accept it).
    /// When `None`, [`TOKEN_ENV`] is read. Never part of the URL: URLs end up in logs.
    pub token: Option<String>,
    /// Most lines (readings) per write request; `max_lines` in the URL overrides it.
    /// InfluxDB recommends about 5000.
    pub max_batch_lines: usize,
    /// Most bytes per write request; `max_bytes` in the URL overrides it. Stay under the
    /// server's `max-body-size` (25 MB by default on 1.x).
    pub max_batch_bytes: usize,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Longest wait for one request's answer (and, for streamed query answers, between
    /// two pieces of it).
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// `CREATE DATABASE` on connect (v1 API only; without the permission it logs and
    /// carries on).
    pub create_database: bool,
    /// Rows per piece of a streamed query answer (`chunk_size`): bounds the memory a
    /// rollup or count holds at once.
    pub query_chunk_rows: usize,
}

impl Default for InfluxOptions {
    fn default() -> Self {
        Self {
            token: None,
            max_batch_lines: 5000,
            max_batch_bytes: 4 << 20,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            create_database: true,
            query_chunk_rows: 10_000,
        }
    }
}

impl fmt::Debug for InfluxOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxOptions")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("max_batch_lines", &self.max_batch_lines)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("create_database", &self.create_database)
            .field("query_chunk_rows", &self.query_chunk_rows)
            .finish()
    }
}

/// Where writes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteApi {
    /// `/write?db=&rp=` (InfluxDB 1.x, and the compatibility API of 2.x and 3.x).
    V1 {
        /// Database.
        db: String,
        /// Retention policy; the database's default when `None`.
        rp: Option<String>,
    },
    /// `/api/v2/write?org=&bucket=` with a token (InfluxDB 2.x, 3.x).
    V2 {
        /// Organisation name.
        org: String,
        /// Bucket name.
        bucket: String,
    },
}

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
enum Auth {
    None,
    /// `Authorization: Token …`.
    Token(String),
    /// `Authorization: Basic …` (user and password from the URL; 1.x with auth enabled).
    Basic(String),
}

/// Everything needed to build requests: parsed and checked from the URL and options.
#[derive(Clone)]
pub struct Endpoint {
    /// `https` (the URL was `influxs://` or `https://`: TLS, verified against the
    /// system's roots, or `SSL_CERT_FILE`) or `http`.
    pub scheme: &'static str,
    /// `host:port` (IPv6 in brackets).
    pub authority: String,
    /// A path prefix (behind a reverse proxy), without trailing `/`; usually empty.
    pub base_path: String,
    /// Where writes go.
    pub write: WriteApi,
    /// The database `/query` reads (`db=`; on 2.x the DBRP mapping names the bucket).
    pub query_db: String,
    /// The retention policy `/query` reads (`rp=`), when given.
    pub query_rp: Option<String>,
    auth: Auth,
    /// Most lines per write request.
    pub max_lines: usize,
    /// Most bytes per write request.
    pub max_bytes: usize,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::Basic(_) => "basic",
        };
        f.debug_struct("Endpoint")
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .field("write", &self.write)
            .field("query_db", &self.query_db)
            .field("query_rp", &self.query_rp)
            .field("auth", &auth)
            .field("max_lines", &self.max_lines)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

fn bad_config(detail: impl Into<String>) -> BackendError {
    BackendError::Rejected {
        backend: BACKEND,
        detail: detail.into(),
    }
}

fn positive(name: &str, value: &str) -> Result<usize, BackendError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            bad_config(format!(
                "{name}={value:?} in the InfluxDB URL is not a positive number"
            ))
        })
}

impl Endpoint {
    /// Parses `influx://[user:password@]host[:8086][/prefix]?db=sensors[&rp=…]` (v1) or
    /// `influx://host:8086?org=…&bucket=…[&db=…]` (v2 writes; needs a token), plus
    /// `max_lines=`/`max_bytes=`; `influxs://` is the same over TLS. `http://` and
    /// `https://` are accepted as synonyms (with ports 80 and 443 by default). `token` is the
    /// token from the options or the environment. Errors never repeat the password.
    pub fn parse(
        url: &str,
        options: &InfluxOptions,
        token: Option<String>,
    ) -> Result<Self, BackendError> {
        let parsed = Url::parse(url).map_err(|e| {
            bad_config(format!(
                "the InfluxDB URL does not parse ({e}); expected influx://host:8086?db=sensors"
            ))
        })?;
        let tls = match parsed.scheme() {
            "influx" | "http" => false,
            "influxs" | "https" => true,
            other => {
                return Err(bad_config(format!(
                    "an InfluxDB URL starts with influx:// (or influxs:// for TLS), not {other}://"
                )));
            }
        };
        let host = match parsed.host() {
            Some(url::Host::Ipv6(addr)) => format!("[{addr}]"),
            Some(host) => host.to_string(),
            None => return Err(bad_config("the InfluxDB URL names no host")),
        };
        // `http://host` means port 80, as anywhere else; `influx://host` InfluxDB's 8086.
        let port = match parsed.scheme() {
            "http" | "https" => parsed.port_or_known_default().unwrap_or(80),
            _ => parsed.port().unwrap_or(DEFAULT_PORT),
        };
        let authority = format!("{host}:{port}");
        let base_path = parsed.path().trim_end_matches('/').to_owned();

        let (mut db, mut rp, mut org, mut bucket) = (None, None, None, None);
        let (mut max_lines, mut max_bytes) = (options.max_batch_lines, options.max_batch_bytes);
        for (key, value) in parsed.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "db" => db = Some(value),
                "rp" => rp = Some(value),
                "org" => org = Some(value),
                "bucket" => bucket = Some(value),
                "max_lines" => max_lines = positive("max_lines", &value)?,
                "max_bytes" => max_bytes = positive("max_bytes", &value)?,
                // Readings carry milliseconds; a coarser precision would merge readings.
                "precision" if value == "ms" => {}
                "precision" => {
                    return Err(bad_config(format!(
                        "precision={value:?}: readings are written with millisecond precision \
                         (precision=ms, the default) so none merge"
                    )));
                }
                "token" => {
                    return Err(bad_config(format!(
                        "the InfluxDB token does not belong in the URL (URLs end up in logs): \
                         set {TOKEN_ENV} instead"
                    )));
                }
                other => {
                    return Err(bad_config(format!(
                        "unknown InfluxDB URL parameter {other:?} (known: db, rp, org, bucket, \
                         max_lines, max_bytes, precision)"
                    )));
                }
            }
        }
        if max_lines == 0 || max_bytes == 0 {
            return Err(bad_config("InfluxDB batch limits must be positive"));
        }
        let token = token.filter(|t| !t.is_empty());
        let basic = (!parsed.username().is_empty()).then(|| {
            let user = percent_decode(parsed.username());
            let password = parsed.password().map(percent_decode).unwrap_or_default();
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        });
        let auth = match (token, basic) {
            (Some(_), Some(_)) => {
                return Err(bad_config(
                    "give InfluxDB either a user and password in the URL or a token, not both",
                ));
            }
            (Some(token), None) => Auth::Token(token),
            (None, Some(basic)) => Auth::Basic(basic),
            (None, None) => Auth::None,
        };

        let (write, query_db) = match (org, bucket) {
            (Some(org), Some(bucket)) => {
                if !matches!(auth, Auth::Token(_)) {
                    return Err(bad_config(format!(
                        "the InfluxDB v2 write API (org and bucket in the URL) needs a token: \
                         set {TOKEN_ENV}"
                    )));
                }
                // Reads go through the v1 compatibility API, whose DBRP mapping usually
                // maps a database of the bucket's name to the bucket.
                let query_db = db.unwrap_or_else(|| bucket.clone());
                (WriteApi::V2 { org, bucket }, query_db)
            }
            (None, None) => {
                let db = db.ok_or_else(|| {
                    bad_config("the InfluxDB URL names no database: add ?db=sensors")
                })?;
                (
                    WriteApi::V1 {
                        db: db.clone(),
                        rp: rp.clone(),
                    },
                    db,
                )
            }
            _ => {
                return Err(bad_config(
                    "the InfluxDB URL needs both org and bucket (v2 writes), or neither (v1)",
                ));
            }
        };
        if query_db.is_empty() {
            return Err(bad_config("the InfluxDB database name is empty"));
        }
        Ok(Self {
            authority,
            base_path,
            write,
            query_db,
            query_rp: rp,
            auth,
            max_lines,
            max_bytes,
            scheme: if tls { "https" } else { "http" },
        })
    }

    /// The v1 database to create on connect, when writes go to one.
    pub fn database_to_create(&self) -> Option<&str> {
        match &self.write {
            WriteApi::V1 { db, .. } => Some(db),
            WriteApi::V2 { .. } => None,
        }
    }

    fn uri(&self, path: &str, params: &[(&str, &str)]) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in params {
            query.append_pair(key, value);
        }
        format!(
            "{}://{}{}{}?{}",
            self.scheme,
            self.authority,
            self.base_path,
            path,
            query.finish()
        )
    }

    fn request(&self, method: Method, uri: String) -> http::request::Builder {
        let builder = Request::builder().method(method).uri(uri);
        match &self.auth {
            Auth::None => builder,
            Auth::Token(token) => builder.header(AUTHORIZATION, secret(&format!("Token {token}"))),
            Auth::Basic(basic) => builder.header(AUTHORIZATION, secret(&format!("Basic {basic}"))),
        }
    }

    /// A write of line protocol, millisecond precision.
    pub fn write_request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, BackendError> {
        let uri = match &self.write {
            WriteApi::V1 { db, rp } => {
                let mut params = vec![("db", db.as_str()), ("precision", "ms")];
                if let Some(rp) = rp {
                    params.push(("rp", rp));
                }
                self.uri("/write", &params)
            }
            WriteApi::V2 { org, bucket } => self.uri(
                "/api/v2/write",
                &[("org", org), ("bucket", bucket), ("precision", "ms")],
            ),
        };
        self.request(Method::POST, uri)
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(body))
            .map_err(|e| bad_config(format!("building the write request: {e}")))
    }

    /// An InfluxQL statement, POSTed as a form (so a long statement never meets a URL
    /// length limit, and `CREATE DATABASE` is allowed); answers carry times as unix
    /// milliseconds, streamed in pieces of `chunk_rows` rows when given.
    pub fn query_request(
        &self,
        statement: &str,
        chunk_rows: Option<usize>,
    ) -> Result<Request<Full<Bytes>>, BackendError> {
        let chunk = chunk_rows.map(|n| n.to_string());
        let mut params = vec![("db", self.query_db.as_str()), ("epoch", "ms")];
        if let Some(rp) = &self.query_rp {
            params.push(("rp", rp));
        }
        if let Some(chunk) = &chunk {
            params.push(("chunked", "true"));
            params.push(("chunk_size", chunk));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", statement)
            .finish();
        self.request(Method::POST, self.uri("/query", &params))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| bad_config(format!("building the query request: {e}")))
    }

    /// `GET /ping`: is the server there.
    pub fn ping_request(&self) -> Result<Request<Full<Bytes>>, BackendError> {
        self.request(
            Method::GET,
            format!(
                "{}://{}{}/ping",
                self.scheme, self.authority, self.base_path
            ),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| bad_config(format!("building the ping request: {e}")))
    }
}

/// A header value marked sensitive (hyper keeps it out of its debug output). A token with
/// characters a header cannot hold becomes an empty value, which the server refuses as
/// unauthorised, rather than a panic.
fn secret(text: &str) -> HeaderValue {
    let mut value = HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

fn percent_decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, token: Option<&str>) -> Result<Endpoint, BackendError> {
        Endpoint::parse(url, &InfluxOptions::default(), token.map(str::to_owned))
    }

    fn detail(result: Result<Endpoint, BackendError>) -> String {
        match result {
            Err(BackendError::Rejected { detail, .. }) => detail,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_v1_url_writes_to_the_database_with_millisecond_precision() {
        let endpoint = parse("influx://127.0.0.1:8086?db=sensors", None).expect("parses");
        assert_eq!(endpoint.database_to_create(), Some("sensors"));
        let request = endpoint
            .write_request(Bytes::from_static(b"m,device_id=a v=1 1\n"))
            .expect("request");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "http://127.0.0.1:8086/write?db=sensors&precision=ms"
        );
        assert!(request.headers().get(AUTHORIZATION).is_none());
        assert_eq!(request.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn the_v2_write_request_names_org_bucket_and_carries_the_token() {
        let endpoint = parse(
            "influx://influxdb:8086?org=acme%20iot&bucket=sensors&max_lines=1000",
            Some("s3cr3t=="),
        )
        .expect("parses");
        assert_eq!(endpoint.max_lines, 1000);
        assert_eq!(
            endpoint.database_to_create(),
            None,
            "buckets are not created"
        );
        let request = endpoint
            .write_request(Bytes::from_static(b"m,device_id=a v=1 1\n"))
            .expect("request");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "http://influxdb:8086/api/v2/write?org=acme+iot&bucket=sensors&precision=ms"
        );
        let auth = &request.headers()[AUTHORIZATION];
        assert_eq!(auth, "Token s3cr3t==");
        assert!(auth.is_sensitive());

        // Reads use the v1 compatibility API, on the bucket's DBRP mapping.
        let query = endpoint
            .query_request("SHOW MEASUREMENTS", None)
            .expect("query");
        assert_eq!(
            query.uri().to_string(),
            "http://influxdb:8086/query?db=sensors&epoch=ms"
        );
        assert_eq!(query.headers()[AUTHORIZATION], "Token s3cr3t==");
    }

    #[test]
    fn queries_are_posted_as_forms_and_can_stream() {
        let endpoint = parse("influx://h/influx/?db=my%20db&rp=autogen", None).expect("parses");
        let request = endpoint
            .query_request("SELECT * FROM \"m\" WHERE a = 'b&c'", Some(500))
            .expect("request");
        assert_eq!(
            request.uri().to_string(),
            "http://h:8086/influx/query?db=my+db&epoch=ms&rp=autogen&chunked=true&chunk_size=500"
        );
        assert_eq!(
            request.headers()[CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        let write = endpoint.write_request(Bytes::new()).expect("write");
        assert_eq!(
            write.uri().to_string(),
            "http://h:8086/influx/write?db=my+db&precision=ms&rp=autogen"
        );
    }

    #[test]
    fn user_and_password_become_basic_auth() {
        let endpoint = parse("influx://writer:p%40ss@[::1]:9999?db=sensors", None).expect("parses");
        assert_eq!(endpoint.authority, "[::1]:9999");
        let request = endpoint.ping_request().expect("ping");
        assert_eq!(request.uri().to_string(), "http://[::1]:9999/ping");
        // base64("writer:p@ss")
        assert_eq!(request.headers()[AUTHORIZATION], "Basic d3JpdGVyOnBAc3M=");
        let shown = format!("{endpoint:?}");
        assert!(
            !shown.contains("d3JpdGVy") && !shown.contains("p@ss"),
            "{shown}"
        );
    }

    #[test]
    fn bad_urls_say_what_to_do_without_repeating_secrets() {
        assert!(detail(parse("influx://h:8086", None)).contains("?db=sensors"));
        for tls in ["influxs://h?db=x", "https://h:8443?db=x"] {
            let endpoint = parse(tls, None).expect("TLS URLs parse");
            let uri = endpoint.ping_request().expect("request").uri().to_string();
            assert!(
                uri.starts_with("https://"),
                "{tls} is never reached in plain text: {uri}"
            );
        }
        assert_eq!(
            parse("https://h?db=x", None).expect("parses").authority,
            "h:443"
        );
        assert_eq!(
            parse("influxs://h?db=x", None).expect("parses").authority,
            "h:8086"
        );
        assert!(detail(parse("kafka://h?db=x", None)).contains("influx://"));
        assert!(detail(parse("influx://h?db=x&dbb=y", None)).contains("\"dbb\""));
        assert!(detail(parse("influx://h?db=x&max_lines=0", None)).contains("max_lines"));
        assert!(detail(parse("influx://h?db=x&precision=s", None)).contains("millisecond"));
        assert!(parse("influx://h?db=x&precision=ms", None).is_ok());
        assert!(detail(parse("influx://h?org=o", Some("t"))).contains("both org and bucket"));
        assert!(detail(parse("influx://h?org=o&bucket=b", None)).contains(TOKEN_ENV));
        let leaked = detail(parse("influx://h?db=x&token=abc123", None));
        assert!(
            leaked.contains(TOKEN_ENV) && !leaked.contains("abc123"),
            "{leaked}"
        );
        let both = detail(parse("influx://u:pw-123@h?db=x", Some("t")));
        assert!(!both.contains("pw-123"), "{both}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            max_elapsed: Duration::from_secs(10),
        };
        let mut backoff = policy.backoff();
        let waits: Vec<u128> = (1..=5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        for _ in 5..199 {
            backoff.next_delay();
        }
        assert_eq!(
            backoff.next_delay(),
            Duration::from_millis(500),
            "no overflow"
        );
    }
}
