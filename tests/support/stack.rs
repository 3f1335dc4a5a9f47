//! The production roles as separate processes against the real services of
//! `scripts/testenv`: each test gets its own Mosquitto, PostgreSQL database, InfluxDB
//! database, Redis key prefix and Kafka topics, so tests run side by side on shared
//! servers without seeing each other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sensorfleet::http::HttpClient;

use super::services::{Kind, Service};
use super::{Broker, free_addr, require_tool};

const SERVICES: [&str; 4] = [
    "SENSORFLEET_TEST_KAFKA_URL",
    "SENSORFLEET_TEST_INFLUX_URL",
    "SENSORFLEET_TEST_REDIS_URL",
    "SENSORFLEET_TEST_POSTGRES_URL",
];

/// The per-test view of the shared services.
pub struct Stack {
    /// A short id unique to this test run.
    pub run: String,
    /// `kafka://…?topic_prefix=<run>-`.
    pub kafka_url: String,
    /// `influx://…?db=<run>`.
    pub influx_url: String,
    /// InfluxDB's HTTP address.
    pub influx_addr: SocketAddr,
    /// The InfluxDB database of this run.
    pub influx_db: String,
    /// `redis://…?prefix=<run>:`.
    pub redis_url: String,
    /// Redis's `redis://host:port` without the prefix.
    pub redis_plain: String,
    /// Key prefix of this run.
    pub redis_prefix: String,
    /// A PostgreSQL database of this run.
    pub postgres_url: String,
    /// Kafka's bootstrap address.
    pub kafka_bootstrap: String,
    /// The test's own Mosquitto.
    pub broker: Broker,
    /// Its port.
    pub mqtt_port: u16,
    /// The CA of a TLS broker in use (`mqtts://`, `SSL_CERT_FILE` of every role).
    pub mqtt_ca: Option<PathBuf>,
    /// Scratch folder: configs, logs, manifests.
    pub dir: tempfile::TempDir,
    postgres_admin: String,
    postgres_db: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

impl Stack {
    /// Sets up a run, or `None` (after saying why) when the services are not configured
    /// and `CI` is not set. Under `CI` a missing service fails the test.
    pub fn start(tag: &str) -> Option<Stack> {
        let missing: Vec<&str> = SERVICES.into_iter().filter(|v| env(v).is_none()).collect();
        if !missing.is_empty() {
            let message = format!(
                "{} not set: start the services with `scripts/testenv up` and export their \
                 URLs with `eval \"$(scripts/testenv env)\"` (make test does both)",
                missing.join(", ")
            );
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        }
        for (tool, package) in [
            ("mosquitto", "mosquitto"),
            ("mosquitto_pub", "mosquitto-clients"),
            ("psql", "postgresql-client"),
            ("redis-cli", "redis-tools"),
            ("kcat", "kcat"),
            ("curl", "curl"),
        ] {
            if !require_tool(tool, package) {
                return None;
            }
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let run = format!("{tag}{}x{}", std::process::id(), nanos % 1_000_000_000);
        let dir = tempfile::tempdir().expect("temp dir");

        let kafka = env(SERVICES[0]).expect("checked");
        let kafka_bootstrap = host_port(&kafka);
        let influx = env(SERVICES[1]).expect("checked");
        let influx_addr: SocketAddr = host_port(&influx).parse().expect("influx host:port");
        let redis_plain = env(SERVICES[2]).expect("checked");
        let postgres_admin = env(SERVICES[3]).expect("checked");

        let postgres_db = format!("sf_{run}");
        psql(&postgres_admin, &format!("CREATE DATABASE {postgres_db}"));
        let (base, _) = postgres_admin
            .rsplit_once('/')
            .expect("postgres URL with a database");
        let postgres_url = format!("{base}/{postgres_db}");

        let mqtt_port = free_addr().port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n\
                 max_queued_messages 0\nmax_inflight_messages 100\npersistence false\n\
                 message_size_limit 65536\nmax_packet_size 98304\n"
            ),
        )
        .expect("mosquitto config");
        let broker = Broker::start(&config, mqtt_port);

        Some(Stack {
            kafka_url: format!("kafka://{kafka_bootstrap}?topic_prefix={run}-"),
            influx_url: format!("influx://{influx_addr}?db={run}"),
            influx_addr,
            influx_db: run.clone(),
            redis_url: format!("{redis_plain}?prefix={run}:"),
            redis_prefix: format!("{run}:"),
            redis_plain,
            postgres_url,
            kafka_bootstrap,
            broker,
            mqtt_port,
            mqtt_ca: None,
            dir,
            postgres_admin,
            postgres_db,
            run,
        })
    }

    /// Points this run's URL of `service`'s kind at that private instance instead of the
    /// shared server (Mosquitto: instead of the run's own broker), with the same per-run
    /// database, prefix and topic names. Call it before starting roles or applying
    /// manifests; everything else stays on the shared servers.
    pub fn use_service(&mut self, service: &Service) {
        let url = service.url();
        let local = format!("127.0.0.1:{}", service.port);
        match service.kind {
            Kind::Mosquitto => {
                self.mqtt_port = service.port;
                self.mqtt_ca = service.ca().map(Path::to_owned);
            }
            Kind::Redis => {
                self.redis_url = format!("{url}?prefix={}", self.redis_prefix);
                self.redis_plain = url;
            }
            Kind::Influx => {
                self.influx_addr = local.parse().expect("a loopback address");
                self.influx_url = format!("{url}?db={}", self.influx_db);
            }
            Kind::Postgres => self.postgres_url = url,
            Kind::Kafka => {
                self.kafka_url = format!("{url}?topic_prefix={}-", self.run);
                self.kafka_bootstrap = local;
            }
        }
    }

    /// Environment every role of this run gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let scheme = if self.mqtt_ca.is_some() {
            "mqtts"
        } else {
            "mqtt"
        };
        let mut env = vec![
            ("SENSORFLEET_KAFKA_URL", self.kafka_url.clone()),
            ("SENSORFLEET_INFLUX_URL", self.influx_url.clone()),
            ("SENSORFLEET_REDIS_URL", self.redis_url.clone()),
            ("SENSORFLEET_POSTGRES_URL", self.postgres_url.clone()),
            (
                "SENSORFLEET_MQTT_URL",
                format!("{scheme}://127.0.0.1:{}", self.mqtt_port),
            ),
            (
                "SENSORFLEET_PROCESSOR_GROUP",
                format!("{}-processor", self.run),
            ),
            ("SENSORFLEET_BRIDGE_GROUP", format!("{}-bridge", self.run)),
            (
                "SENSORFLEET_BRIDGE_CLIENT_ID",
                format!("{}-bridge", self.run),
            ),
            ("SENSORFLEET_REFRESH", "1s".to_owned()),
            ("SENSORFLEET_LOG", "info".to_owned()),
        ];
        if let Some(ca) = &self.mqtt_ca {
            env.push(("SSL_CERT_FILE", ca.display().to_string()));
        }
        env
    }

    /// Writes a manifest into the scratch folder and returns its path.
    pub fn manifest(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write manifest");
        path
    }

    /// Runs `sensorfleet apply -f files` and asserts it succeeded.
    pub fn apply(&self, files: &[&Path]) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sensorfleet"));
        command.arg("apply");
        for file in files {
            command.args(["-f", &file.display().to_string()]);
        }
        let output = command
            .envs(self.env())
            .output()
            .expect("run sensorfleet apply");
        assert!(
            output.status.success(),
            "sensorfleet apply failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts a role with `args`; its ops (or API) address is free and returned.
    pub fn role(&self, role: &str, args: &[&str]) -> RoleProcess {
        self.role_env(role, args, &[])
    }

    /// [`Stack::role`] with `env` in place of (or beside) the run's environment.
    pub fn role_env(
        &self,
        role: &str,
        args: &[&str],
        env: &[(&'static str, String)],
    ) -> RoleProcess {
        let addr = free_addr();
        let flag = if role == "api" {
            "--http-addr"
        } else {
            "--metrics-addr"
        };
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend([flag.to_owned(), addr.to_string()]);
        if role == "api" {
            // Its ops port too: API processes of parallel tests must not share one.
            args.extend(["--metrics-addr".to_owned(), free_addr().to_string()]);
        }
        let mut process = RoleProcess {
            role: role.to_owned(),
            args,
            env: self
                .env()
                .into_iter()
                .filter(|(k, _)| env.iter().all(|(o, _)| o != k))
                .chain(env.iter().cloned())
                .collect(),
            addr,
            // One log per process: two bridges of one run must not share a file.
            log: self.dir.path().join(format!("{role}-{}.log", addr.port())),
            child: None,
            starts: 0,
        };
        process.spawn();
        process
    }

    /// An InfluxQL query against this run's database; the first series' rows.
    pub async fn influx_query(&self, query: &str) -> serde_json::Value {
        let path = format!("/query?db={}&q={}", self.influx_db, url_encode(query));
        let response = HttpClient::new(self.influx_addr)
            .get(&path)
            .await
            .expect("query InfluxDB");
        assert_eq!(response.status, 200, "InfluxDB query {query}");
        response.json()
    }

    /// `redis-cli` against the shared Redis; stdout.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-u", &self.redis_plain])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(output.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `sql` on this run's PostgreSQL registry with `psql` and returns its rows,
    /// unaligned, columns separated by tabs; fails the test if `psql` does.
    pub fn registry_rows(&self, sql: &str) -> String {
        let output = Command::new("psql")
            .args([&self.postgres_url, "-tA", "-F", "\t", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Appends one record to a Kafka topic of this run with `kcat`, bypassing the bridge.
    pub fn kafka_produce(&self, topic: &str, key: &str, value: &str) {
        use std::io::Write;
        let mut child = Command::new("kcat")
            .args(["-b", &self.kafka_bootstrap, "-P", "-q"])
            .args(["-t", &format!("{}-{topic}", self.run), "-k", key])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run kcat -P");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{value}").expect("write to kcat");
        drop(stdin);
        assert!(child.wait().expect("kcat").success(), "kcat -P failed");
    }

    /// Writes line protocol straight into this run's InfluxDB database (millisecond
    /// times), as another writer would; the HTTP status.
    pub fn influx_write(&self, lines: &str) -> String {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-XPOST"])
            .arg(format!(
                "http://{}/write?db={}&precision=ms",
                self.influx_addr, self.influx_db
            ))
            .args(["--data-binary", lines])
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every record of a Kafka topic of this run, read with `kcat`: `(key, headers, value)`.
    pub fn kafka_records(&self, topic: &str) -> Vec<(String, String, String)> {
        let output = Command::new("kcat")
            .args([
                "-b",
                &self.kafka_bootstrap,
                "-C",
                "-e",
                "-q",
                "-o",
                "beginning",
            ])
            .args(["-t", &format!("{}-{topic}", self.run)])
            .args(["-f", "%k\\t%h\\t%s\\n"])
            .output()
            .expect("run kcat");
        assert!(
            output.status.success(),
            "kcat failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, '\t');
                Some((
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                ))
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Best effort: a leftover database or key set only costs space.
        let _ = Command::new("psql")
            .args([
                &self.postgres_admin,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.postgres_db),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let influx = format!(
            "curl -s -o /dev/null -XPOST http://{}/query --data-urlencode 'q=DROP DATABASE \"{}\"'",
            self.influx_addr, self.influx_db
        );
        let _ = Command::new("sh").args(["-c", &influx]).status();
    }
}

fn psql(url: &str, statement: &str) {
    let output = Command::new("psql")
        .args([url, "-qc", statement])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {statement}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One role process; restartable with the same arguments, killable with SIGKILL.
pub struct RoleProcess {
    role: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Ops or API address.
    pub addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl RoleProcess {
    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("role log");
        let child = Command::new(env!("CARGO_BIN_EXE_sensorfleet"))
            .arg(&self.role)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a sensorfleet role");
        self.child = Some(child);
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn ready(&self, seconds: u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut client = HttpClient::new(self.addr);
        loop {
            if let Ok(response) = client.get("/health/ready").await
                && response.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready within {seconds} s; log:\n{}",
                self.role,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// A client for its HTTP address.
    pub fn client(&self) -> HttpClient {
        HttpClient::new(self.addr)
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            let _ = child.wait();
        }
    }

    /// SIGTERM, as Kubernetes stops a pod in a rollout, and waits (at most 20 s) for the
    /// clean shutdown.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "{} stopped with {status}", self.role);
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within 20 s of SIGTERM; log:\n{}",
                    self.role,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again with the same arguments and environment.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill9 or stop");
        self.spawn();
    }

    /// Its log so far (every start appends).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
