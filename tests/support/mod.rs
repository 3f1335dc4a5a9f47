//! What the end-to-end tests share: starting `sensorfleet up` on free ports, publishing
//! with Debian's `mosquitto_pub` (a client this project did not write), and the rule
//! that under `CI` a missing tool fails the test instead of skipping it.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sensorfleet::http::HttpClient;

pub mod fleet;
pub mod hostile;
pub mod services;
pub mod stack;

/// True when the tool is on PATH. Without it: under `CI`, panic; otherwise print why the
/// test is skipped and return false.
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    let message =
        format!("{tool} is not installed (Debian package {package}; `make deps` installs it)");
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    false
}

/// `mosquitto_pub` aimed at a broker on this machine's `port`, at QoS 1.
pub fn mosquitto_pub(port: u16) -> Command {
    let mut command = Command::new("mosquitto_pub");
    let port = port.to_string();
    command.args(["-h", "127.0.0.1", "-p", &port, "-q", "1"]);
    command
}

/// Publishing with `mosquitto_pub` at QoS 1 to a broker on this machine: the embedded
/// endpoint of `up` or a Mosquitto of the test's own.
pub trait Publish {
    /// The broker's port on 127.0.0.1.
    fn mqtt_port(&self) -> u16;

    /// Publishes one message.
    fn publish(&self, topic: &str, payload: &str) {
        self.publish_bytes(topic, payload.as_bytes());
    }

    /// Publishes one message of any bytes (invalid UTF-8 included), from a file.
    fn publish_bytes(&self, topic: &str, payload: &[u8]) {
        let file = tempfile::NamedTempFile::new().expect("a temp file");
        std::fs::write(file.path(), payload).expect("write the payload");
        let status = mosquitto_pub(self.mqtt_port())
            .args(["-t", topic, "-f", &file.path().display().to_string()])
            .status()
            .expect("run mosquitto_pub");
        assert!(status.success(), "mosquitto_pub failed for {topic}");
    }

    /// Publishes many messages on one connection (`mosquitto_pub -l`: one per line).
    fn publish_lines(&self, topic: &str, lines: &[String]) {
        use std::io::Write;
        let mut child = mosquitto_pub(self.mqtt_port())
            .args(["-l", "-t", topic])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run mosquitto_pub -l");
        let mut stdin = child.stdin.take().expect("stdin");
        for line in lines {
            writeln!(stdin, "{line}").expect("write to mosquitto_pub");
        }
        drop(stdin);
        assert!(child.wait().expect("mosquitto_pub").success());
    }
}

impl Publish for Up {
    fn mqtt_port(&self) -> u16 {
        self.mqtt.port()
    }
}

impl Publish for Broker {
    fn mqtt_port(&self) -> u16 {
        self.port
    }
}

/// A free loopback port.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A running `sensorfleet up`, stopped (SIGINT, then kill) when dropped.
pub struct Up {
    child: Option<Child>,
    /// API address.
    pub http: SocketAddr,
    /// Embedded broker address.
    pub mqtt: SocketAddr,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// The API credential its clients send, when auth is on.
    pub credential: Option<String>,
}

impl Up {
    /// Starts `up` with `args` after the addresses and data dir, and waits until
    /// `/health/system` says healthy.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Up {
        Up::start_as(data_dir, extra, &[], None).await
    }

    /// [`Up::start`] with `env` set, its clients sending `credential` as a bearer token.
    pub async fn start_as(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        credential: Option<&str>,
    ) -> Up {
        let http = free_addr();
        let mqtt = free_addr();
        let log = data_dir.join(format!("up-{}.log", http.port()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sensorfleet"))
            .arg("up")
            .args(["--data-dir", &data_dir.display().to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(["--mqtt-addr", &mqtt.to_string()])
            .args(extra)
            .envs(env.iter().copied())
            .env("SENSORFLEET_LOG", "info,rumqttd=off")
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start sensorfleet up");
        let up = Up {
            child: Some(child),
            http,
            mqtt,
            data_dir: data_dir.to_owned(),
            log,
            credential: credential.map(str::to_owned),
        };
        let mut client = up.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Healthy includes "the bridge is subscribed": earlier readings would reach no one.
            if let Ok(response) = client.get("/health/system").await
                && response.status == 200
                && response.json()["status"] == "healthy"
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "up did not become healthy in 30 s; log:\n{}",
                up.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        up
    }

    /// A client for the API.
    pub fn client(&self) -> HttpClient {
        let client = HttpClient::new(self.http);
        match &self.credential {
            Some(credential) => client.with_bearer(credential),
            None => client,
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the same process still runs (it never restarts itself).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops the process with SIGINT (a clean shutdown) and waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("up did not stop within 20 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Mosquitto broker of the test's own, stopped when dropped.
pub struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    /// Starts `mosquitto -c config` and waits until it accepts connections on `port`.
    pub fn start(config: &Path, port: u16) -> Broker {
        let child = Command::new("mosquitto")
            .args(["-c", &config.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let broker = Broker { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(seconds, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {seconds} s waiting for {what}"))
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `seconds`: `None`
/// when it never did (the caller says what it saw).
pub async fn within<T, F, Fut>(seconds: u64, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `command` to its end with `stdin` (or nothing) as its input and returns what it
/// printed and how it ended; panics only when it cannot be started or waited for.
pub fn run_command(command: &mut Command, stdin: Option<&str>) -> Output {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to {shown}: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{shown} did not finish: {e}"))
}

/// Runs the command and returns its stdout; panics with its stderr when it fails.
pub fn succeed(command: &mut Command, stdin: Option<&str>) -> String {
    let shown = format!("{command:?}");
    let output = run_command(command, stdin);
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
