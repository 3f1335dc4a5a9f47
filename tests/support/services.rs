//! Private instances of the backing services, for the tests that stop one: the same
//! binaries and configuration style as `scripts/testenv`, but on free loopback ports with
//! their data in a temp dir the test owns. The shared servers of `scripts/testenv` are
//! never stopped; a test points one URL of its [`Stack`](super::stack::Stack) at its
//! private instance and stops and starts that one, with the same data dir.
//!
//! Every process is the direct child of the test (no daemonising), so a [`Service`]
//! knows its PID, and dropping it kills that PID: nothing outlives the test.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_addr, require_tool};

/// Which service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Mosquitto, with persistence on (its sessions and queues survive a clean stop).
    Mosquitto,
    /// `redis-server` without persistence, as `scripts/testenv` runs it: a cache.
    Redis,
    /// InfluxDB 1.x (`influxd run -config`).
    Influx,
    /// PostgreSQL 15 from Debian, run as the `postgres` user.
    Postgres,
    /// Kafka in KRaft mode (one broker-controller) from the jars `scripts/testenv` fetched.
    Kafka,
}

impl Kind {
    /// The name used in logs and fault lines.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mosquitto => "mosquitto",
            Kind::Redis => "redis",
            Kind::Influx => "influxdb",
            Kind::Postgres => "postgres",
            Kind::Kafka => "kafka",
        }
    }
}

/// One private server process, restartable on its data dir, killed when dropped.
pub struct Service {
    /// Which service.
    pub kind: Kind,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    program: PathBuf,
    args: Vec<String>,
    /// Runs as this OS user (PostgreSQL refuses to run as root).
    user: Option<&'static str>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// The private CA its server certificate is signed by, when it serves TLS.
    ca: Option<PathBuf>,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Service {
    /// Prepares and starts a private instance of `kind`, waiting until it serves; `None`
    /// (after saying why) when a tool is missing and `CI` is not set.
    pub fn start(kind: Kind) -> Option<Service> {
        Service::start_as(kind, false)
    }

    /// [`Service::start`] serving TLS only, with a certificate for 127.0.0.1 from a
    /// private CA made for the run ([`Service::ca`]), and clients authenticated (InfluxDB:
    /// `auth-enabled`; create the first admin with [`Service::influx_admin`]).
    pub fn start_tls(kind: Kind) -> Option<Service> {
        assert!(
            matches!(kind, Kind::Influx | Kind::Mosquitto),
            "TLS instances: InfluxDB and Mosquitto so far"
        );
        Service::start_as(kind, true)
    }

    fn start_as(kind: Kind, tls: bool) -> Option<Service> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_addr().port();
        let data = dir.path().to_owned();
        let log = data.join(format!("{}.log", kind.name()));
        let (program, args, user): (PathBuf, Vec<String>, Option<&'static str>) = match kind {
            Kind::Mosquitto => {
                if !require_tool("mosquitto", "mosquitto") {
                    return None;
                }
                let config = data.join("mosquitto.conf");
                // TLS: the listener serves only TLS, with a certificate of the run's CA.
                let tls_lines = if tls {
                    let (cert, key) = tls_files(&data.join("tls"));
                    let chown = Command::new("chown")
                        .args(["-R", "mosquitto:"])
                        .arg(data.join("tls"))
                        .status()
                        .expect("run chown");
                    assert!(chown.success(), "chown the TLS files to mosquitto");
                    format!("certfile {}\nkeyfile {}\n", cert.display(), key.display())
                } else {
                    String::new()
                };
                // The Stack's limits, plus persistence so sessions survive the restart:
                // written by the `mosquitto` user it drops to (without the data dir its
                // own, it logs "Permission denied" at exit and saves nothing; nor can it
                // read its key).
                give_to("mosquitto", &data);
                std::fs::write(
                    &config,
                    format!(
                        "listener {port} 127.0.0.1\n{tls_lines}allow_anonymous true\nuser mosquitto\n\
                         max_queued_messages 0\nmax_inflight_messages 100\n\
                         message_size_limit 65536\nmax_packet_size 98304\n\
                         persistence true\npersistence_location {}/\n",
                        data.display()
                    ),
                )
                .expect("mosquitto config");
                (
                    "mosquitto".into(),
                    vec!["-c".into(), config.display().to_string()],
                    None,
                )
            }
            Kind::Redis => {
                if !require_tool("redis-server", "redis-server") {
                    return None;
                }
                let args = [
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--dir",
                    &data.display().to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ];
                ("redis-server".into(), strings(&args), None)
            }
            Kind::Influx => {
                if !require_tool("influxd", "influxdb") {
                    return None;
                }
                let config = data.join("influxdb.conf");
                let mut text = influx_config(&data, port);
                if tls {
                    let (cert, key) = tls_files(&data.join("tls"));
                    text = text.replace(
                        "auth-enabled = false",
                        &format!(
                            "auth-enabled = true\n  https-enabled = true\n  \
                             https-certificate = \"{}\"\n  https-private-key = \"{}\"",
                            cert.display(),
                            key.display()
                        ),
                    );
                }
                std::fs::write(&config, text).expect("influxdb config");
                (
                    "influxd".into(),
                    strings(&["run", "-config", &config.display().to_string()]),
                    None,
                )
            }
            Kind::Postgres => {
                if !require_tool(&format!("{PG_BIN}/initdb"), "postgresql-15") {
                    return None;
                }
                let pgdata = postgres_init(&data);
                let args = [
                    "-D",
                    &pgdata.display().to_string(),
                    "-p",
                    &port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                ];
                (
                    Path::new(PG_BIN).join("postgres"),
                    strings(&args),
                    Some("postgres"),
                )
            }
            Kind::Kafka => {
                if !require_tool("java", "openjdk-17-jre-headless") {
                    return None;
                }
                let libs = kafka_libs();
                assert!(
                    libs.join(".complete").exists(),
                    "no Kafka jars in {}: `scripts/testenv up kafka` fetches them",
                    libs.display()
                );
                let controller = free_addr().port();
                let props = kafka_config(&data, port, controller);
                kafka_format(&libs, &props, &data);
                let args = [
                    "-Xms128m",
                    "-Xmx384m",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-XX:+ExitOnOutOfMemoryError",
                    "-Djava.awt.headless=true",
                    "-Dlog4j2.shutdownHookEnabled=false",
                    &format!(
                        "-Dlog4j2.configurationFile={}",
                        data.join("log4j2.properties").display()
                    ),
                    &format!("-Dkafka.logs.dir={}", data.display()),
                    "-cp",
                    &format!("{}/*", libs.display()),
                    "kafka.Kafka",
                    &props.display().to_string(),
                ];
                ("java".into(), strings(&args), None)
            }
        };
        let mut service = Service {
            kind,
            port,
            dir,
            program,
            args,
            user,
            log,
            child: None,
            starts: 0,
            ca: tls.then(|| data.join("tls/ca.crt")),
        };
        service.run();
        Some(service)
    }

    /// The URL a SensorFleet role takes for it (the Stack adds its per-run parameters).
    pub fn url(&self) -> String {
        let port = self.port;
        match self.kind {
            Kind::Mosquitto if self.ca.is_some() => format!("mqtts://127.0.0.1:{port}"),
            Kind::Mosquitto => format!("mqtt://127.0.0.1:{port}"),
            Kind::Redis => format!("redis://127.0.0.1:{port}"),
            Kind::Influx if self.ca.is_some() => format!("influxs://127.0.0.1:{port}"),
            Kind::Influx => format!("influx://127.0.0.1:{port}"),
            Kind::Postgres => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            Kind::Kafka => format!("kafka://127.0.0.1:{port}"),
        }
    }

    /// Starts the process on its data dir and waits (bounded) until it serves.
    fn run(&mut self) {
        assert!(self.child.is_none(), "{} already runs", self.kind.name());
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("service log");
        let mut command = match self.user {
            // setpriv execs (no fork), so the child's PID is the server's.
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", user, "--regid", user, "--init-groups", "--"]);
                c.arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        let child = command
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self.serves() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited with {status} while starting; log:\n{}",
                    self.kind.name(),
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not serve on {} within 180 s; log:\n{}",
                self.kind.name(),
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True once the server answers its clients.
    fn serves(&self) -> bool {
        if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            return false;
        }
        match self.kind {
            Kind::Mosquitto | Kind::Redis => true,
            Kind::Influx => self
                .curl(&["-o", "/dev/null", "--max-time", "2"], "/ping")
                .status()
                .is_ok_and(|s| s.success()),
            Kind::Postgres => Command::new(Path::new(PG_BIN).join("pg_isready"))
                .args([
                    "-q",
                    "-U",
                    "postgres",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                ])
                .status()
                .is_ok_and(|s| s.success()),
            // Listening is not serving: the broker logs this once its metadata is loaded.
            Kind::Kafka => {
                self.log_text().matches("Kafka Server started").count() >= self.starts as usize
            }
        }
    }

    /// The private CA of a TLS instance.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// `curl -fs` of `path` on this instance, over TLS verified against its CA when it
    /// serves TLS.
    pub fn curl(&self, args: &[&str], path: &str) -> Command {
        let mut command = Command::new("curl");
        command.arg("-fs").args(args);
        match &self.ca {
            Some(ca) => command
                .arg("--cacert")
                .arg(ca)
                .arg(format!("https://127.0.0.1:{}{path}", self.port)),
            None => command.arg(format!("http://127.0.0.1:{}{path}", self.port)),
        };
        command
    }

    /// Creates InfluxDB's first admin user (allowed without credentials while it has
    /// none).
    pub fn influx_admin(&self, user: &str, password: &str) {
        let statement =
            format!("q=CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES");
        let output = self
            .curl(&["-X", "POST", "--data-urlencode", &statement], "/query")
            .output()
            .expect("run curl");
        assert!(
            output.status.success(),
            "CREATE USER failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The fault: SIGKILL, no shutdown of any kind.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }

    /// Sends `signal` (`TERM`: a clean stop; `QUIT` for PostgreSQL: its immediate
    /// shutdown, a crash as far as its data is concerned) and waits (at most 60 s).
    pub fn signal(&mut self, signal: &str) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within 60 s of SIG{signal}",
                    self.kind.name()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same data dir and port; waits until it serves.
    pub fn restart(&mut self) {
        self.run();
    }

    /// Its log so far (every start appends).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The postmaster takes its backends with it on SIGQUIT; SIGKILL would orphan them.
        if self.kind == Kind::Postgres {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A private CA and a certificate for 127.0.0.1 it signed, in `dir`: (certificate, key).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("tls dir");
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").expect("san");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=sensorfleet test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    (dir.join("server.crt"), dir.join("server.key"))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// `scripts/testenv`'s InfluxDB configuration, on this instance's ports and dirs.
fn influx_config(data: &Path, port: u16) -> String {
    let rpc = free_addr().port();
    let d = data.display();
    format!(
        "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\n\
         [meta]\n  dir = \"{d}/meta\"\n  retention-autocreate = true\n  logging-enabled = true\n\n\
         [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  index-version = \"inmem\"\n  \
         query-log-enabled = false\n\n\
         [monitor]\n  store-enabled = false\n\n\
         [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{port}\"\n  auth-enabled = false\n  \
         log-enabled = false\n\n[logging]\n  level = \"warn\"\n"
    )
}

/// `initdb` as the postgres user, trust authentication as `scripts/testenv` does; the
/// data dir.
/// Hands `dir` to `user`, the account a service runs as (the tests run as root;
/// PostgreSQL refuses root, Mosquitto drops to its own user after reading its config).
fn give_to(user: &str, dir: &Path) {
    let chown = Command::new("chown")
        .arg(format!("{user}:"))
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(chown.success(), "chown {} to {user}", dir.display());
}

fn postgres_init(data: &Path) -> PathBuf {
    give_to("postgres", data);
    let pgdata = data.join("pgdata");
    let output = Command::new("setpriv")
        .args([
            "--reuid",
            "postgres",
            "--regid",
            "postgres",
            "--init-groups",
            "--",
        ])
        .arg(Path::new(PG_BIN).join("initdb"))
        .args(["-D", &pgdata.display().to_string()])
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ])
        .output()
        .expect("run initdb");
    assert!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    pgdata
}

/// The jars of the Kafka version `testenv/kafka/pom.xml` names.
fn kafka_libs() -> PathBuf {
    let pom = Path::new(env!("CARGO_MANIFEST_DIR")).join("testenv/kafka/pom.xml");
    let pom = std::fs::read_to_string(&pom).expect("testenv/kafka/pom.xml");
    let version = std::env::var("SENSORFLEET_KAFKA_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            let start = pom.find("<kafka.version>")? + "<kafka.version>".len();
            let end = start + pom[start..].find('<')?;
            Some(pom[start..end].trim().to_owned())
        })
        .expect("a <kafka.version> in testenv/kafka/pom.xml");
    let cache =
        std::env::var("SENSORFLEET_CACHE").unwrap_or_else(|_| "/var/cache/sensorfleet".into());
    Path::new(&cache).join("kafka-libs").join(version)
}

/// `scripts/testenv`'s broker configuration, without the node listener, on this
/// instance's ports and dir; the path of the properties file.
fn kafka_config(data: &Path, port: u16, controller: u16) -> PathBuf {
    let props = data.join("server.properties");
    std::fs::write(
        &props,
        format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={}\nnum.partitions=1\ndefault.replication.factor=1\n\
             min.insync.replicas=1\noffsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=10\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\nauto.create.topics.enable=false\n\
             delete.topic.enable=true\ngroup.initial.rebalance.delay.ms=0\n\
             num.network.threads=2\nnum.io.threads=4\n",
            data.join("kafka-data").display()
        ),
    )
    .expect("kafka config");
    std::fs::write(
        data.join("log4j2.properties"),
        "status = warn\nappender.out.type = Console\nappender.out.name = out\n\
         appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n\
         rootLogger.level = info\nrootLogger.appenderRef.out.ref = out\n\
         logger.kafkareq.name = kafka.request.logger\nlogger.kafkareq.level = warn\n\
         logger.state.name = state.change.logger\nlogger.state.level = warn\n",
    )
    .expect("kafka log4j2 config");
    props
}

/// Formats the storage once, as `scripts/testenv`'s `kafka_format` does.
fn kafka_format(libs: &Path, props: &Path, data: &Path) {
    // Any 16 bytes in URL-safe base64 make a cluster id; each instance has its own dir.
    let cluster = "c2Vuc29yZmxlZXQtdGVzdA";
    let output = Command::new("java")
        .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            data.join("log4j2.properties").display()
        ))
        .args(["-cp", &format!("{}/*", libs.display())])
        .args(["kafka.tools.StorageTool", "format", "--ignore-formatted"])
        .args(["-t", cluster, "-c", &props.display().to_string()])
        .output()
        .expect("run kafka's StorageTool");
    assert!(
        output.status.success(),
        "formatting the Kafka storage failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
