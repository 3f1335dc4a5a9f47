//! The chart in a real cluster: `scripts/testenv up node` gives the test control plane a
//! node, and this test does what a user does. It makes the image from the release binary
//! (`scripts/testenv image`, no registry), `helm install`s the chart, applies a Pipeline
//! pointing at the test environment's services (which pods reach at the node's bridge
//! address) and `examples/`, and waits until the operator and every worker run and are
//! Ready. Then `sensorfleet simulate` publishes into Mosquitto, readings and alerts come
//! back through the API's Service, and while a second stream is published a bridge pod is
//! deleted, the Pipeline is edited (a rollout of every worker) and a processor pod is
//! killed: every reading published is stored exactly once (InfluxDB keeps one point per
//! device and timestamp, so a count equal to the number published means none lost and
//! none extra). The operator's `/metrics` answers on its pod's port, through its Service.
//!
//! Needs root (the image goes into the node's containerd), `make test` (`scripts/testenv
//! up … node`) and `eval "$(scripts/testenv env)"`. Without the node the test says it is
//! skipped; under `CI` it fails.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sensorfleet::http::HttpClient;
use sensorfleet_model::SensorFleet;
use sensorfleet_model::manifest::declared_devices;
use support::{run_command, succeed, within};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_sensorfleet");
/// The tag the chart runs (its appVersion) and the Pipeline names: the image made here.
const IMAGE: &str = "sensorfleet:0.1.0";
/// The Pipeline's name: `examples/` fleets select `pipeline: main`.
const PIPELINE: &str = "main";
/// Devices of the test's own fleet, and readings per stream.
const DEVICES: usize = 20;
const FIRST: u64 = 2_000;
const SECOND: u64 = 6_000;
/// Readings of the throughput run (printed, not asserted: BENCHMARKS.md).
const BENCH: u64 = 20_000;

const VARS: [&str; 9] = [
    "SENSORFLEET_KUBECTL",
    "SENSORFLEET_HELM",
    "SENSORFLEET_TEST_KUBECONFIG",
    "SENSORFLEET_TEST_NODE",
    "SENSORFLEET_TEST_NODE_IP",
    "SENSORFLEET_TEST_POSTGRES_URL",
    "SENSORFLEET_TEST_INFLUX_URL",
    "SENSORFLEET_TEST_REDIS_URL",
    "SENSORFLEET_TEST_MQTT_URL",
];

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// Says why the test cannot run: under `CI` a failure, otherwise a skip.
fn unavailable(message: &str) -> bool {
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
    false
}

/// `host:port` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

fn port_of(url: &str) -> &str {
    authority(url).rsplit_once(':').map_or("", |(_, p)| p)
}

/// The cluster and this run's namespace; on drop, everything the run made goes.
struct Cluster {
    kubectl: PathBuf,
    helm: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
    run: String,
    node_ip: String,
    postgres_admin: String,
    influx: SocketAddr,
    redis: String,
    mqtt_port: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.namespace, "--request-timeout", "30s"])
            .args(args);
        command
    }

    fn kube(&self, args: &[&str]) -> String {
        succeed(&mut self.kubectl(args), None)
    }

    fn apply(&self, yaml: &str) {
        succeed(&mut self.kubectl(&["apply", "-f", "-"]), Some(yaml));
    }

    fn jsonpath(&self, object: &str, path: &str) -> String {
        let out = run_command(
            &mut self.kubectl(&["get", object, "-o", &format!("jsonpath={path}")]),
            None,
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// What the pods of this run say, for a failure's message.
    fn describe(&self) -> String {
        let pods = run_command(&mut self.kubectl(&["get", "pods", "-o", "wide"]), None);
        let events = run_command(
            &mut self.kubectl(&["get", "events", "--sort-by", ".lastTimestamp"]),
            None,
        );
        let events = String::from_utf8_lossy(&events.stdout).into_owned();
        let tail: Vec<&str> = events.lines().rev().take(25).collect();
        format!(
            "pods:\n{}\nlast events:\n{}",
            String::from_utf8_lossy(&pods.stdout),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// The last lines each container of this run's pods wrote, read where the kubelet
    /// keeps them (`/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`: the
    /// node is this machine).
    fn logs(&self, lines: usize) -> String {
        let mut shown = String::new();
        let Ok(pods) = std::fs::read_dir("/var/log/pods") else {
            return "no /var/log/pods".to_owned();
        };
        let mut pods: Vec<PathBuf> = pods
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy()
                        .starts_with(&format!("{}_", self.namespace))
                })
            })
            .collect();
        pods.sort();
        for pod in pods {
            let Ok(containers) = std::fs::read_dir(&pod) else {
                continue;
            };
            for container in containers.flatten() {
                let Ok(files) = std::fs::read_dir(container.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let text = std::fs::read_to_string(file.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
                    shown.push_str(&format!("--- {}\n", file.path().display()));
                    for line in tail.into_iter().rev() {
                        shown.push_str(line);
                        shown.push('\n');
                    }
                }
            }
        }
        shown
    }

    /// The run's rules and newest alerts as its PostgreSQL holds them.
    fn registry(&self) -> String {
        let (base, _) = self.postgres_admin.rsplit_once('/').unwrap_or_default();
        let sql = "SELECT name, fleet, metric_name, threshold_max FROM alert_rules; \
                   SELECT id, state, updated_ms FROM alerts ORDER BY updated_ms DESC LIMIT 20; \
                   SELECT count(*) AS rule_state_rows FROM rule_state; \
                   SELECT count(*) AS devices FROM devices";
        let out = run_command(
            Command::new("psql")
                .arg(format!("{base}/sf_{}", self.run))
                .args(["-c", sql]),
            None,
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// [`support::eventually`], failing with the pods' state, the registry and the logs.
    async fn eventually<T, F, Fut>(&self, seconds: u64, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        match within(seconds, check).await {
            Some(value) => value,
            None => panic!(
                "timed out after {seconds} s waiting for {what}\n{}\nregistry:\n{}\npod logs:\n{}",
                self.describe(),
                self.registry(),
                self.logs(60)
            ),
        }
    }

    /// Polls until `ready` holds, or fails with the pods' state after `seconds`.
    fn wait(&self, seconds: u64, what: &str, mut ready: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {seconds} s waiting for {what}\n{}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Ready replicas of a workload equal to its desired replicas, all of the current
    /// revision.
    fn rolled_out(&self, workload: &str) -> bool {
        run_command(
            &mut self.kubectl(&["rollout", "status", workload, "--timeout", "2s"]),
            None,
        )
        .status
        .success()
    }

    /// `ip:port` of a Service's first port (its ClusterIP: kube-proxy's rules lead on).
    fn service(&self, name: &str) -> SocketAddr {
        let ip = self.jsonpath(&format!("service/{name}"), "{.spec.clusterIP}");
        let port = self.jsonpath(&format!("service/{name}"), "{.spec.ports[0].port}");
        format!("{ip}:{port}")
            .parse()
            .unwrap_or_else(|_| panic!("service {name} has no ClusterIP: '{ip}:{port}'"))
    }

    /// Readings in InfluxDB of the devices whose ids start with `prefix`.
    async fn stored(&self, prefix: &str) -> u64 {
        let query = format!(
            "SELECT count(temperature_celsius) FROM temperature_sensor WHERE device_id =~ /^{prefix}/"
        );
        let path = format!("/query?db={}&q={}", self.run, encode(&query));
        let Ok(response) = HttpClient::new(self.influx).get(&path).await else {
            return 0;
        };
        response.json()["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0)
    }

    /// `sensorfleet simulate` of the fleet in `file` (of the scratch folder) into the
    /// test Mosquitto.
    fn simulate(&self, file: &str, readings: u64, rate: u32, seed: u32) -> Child {
        let fleet = self.dir.path().join(file);
        Command::new(BIN)
            .args(["simulate", "-f", &fleet.display().to_string()])
            .args([
                "--mqtt-url",
                &format!("mqtt://127.0.0.1:{}", self.mqtt_port),
            ])
            .args([
                "--rate",
                &rate.to_string(),
                "--limit",
                &readings.to_string(),
            ])
            .args(["--anomaly-rate", "0", "--dropout-rate", "0"])
            .args(["--seed", &seed.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sensorfleet simulate")
    }
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().expect("wait for simulate");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("SENSORFLEET_KEEP_CLUSTER").is_some() {
            eprintln!(
                "kept namespace {} (SENSORFLEET_KEEP_CLUSTER)",
                self.namespace
            );
            return;
        }
        // The custom resources first, while the operator runs: it holds SensorFleets and
        // AlertRules with a finalizer until their rows in PostgreSQL are gone.
        let kinds = "sensorfleets.iot.sensorfleet.dev,alertrules.iot.sensorfleet.dev,pipelines.iot.sensorfleet.dev";
        let _ = run_command(
            &mut self.kubectl(&["delete", kinds, "--all", "--wait=true", "--timeout=90s"]),
            None,
        );
        let left = run_command(&mut self.kubectl(&["get", kinds, "-o", "name"]), None);
        for object in String::from_utf8_lossy(&left.stdout).lines() {
            let _ = run_command(
                &mut self.kubectl(&[
                    "patch",
                    object,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]),
                None,
            );
        }
        let _ = run_command(
            Command::new(&self.helm)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["uninstall", "sensorfleet", "-n", &self.namespace, "--wait"]),
            None,
        );
        let _ = run_command(
            &mut self.kubectl(&["delete", "namespace", &self.namespace, "--wait=true"]),
            None,
        );
        // The bridges' persistent sessions: nobody reads them any more.
        for ordinal in 0..2 {
            let _ = run_command(
                Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &self.mqtt_port])
                    .args(["-i", &format!("{PIPELINE}-bridge-{ordinal}")])
                    .args(["-t", "sensorfleet/cluster-test/bye", "-n", "-q", "0"]),
                None,
            );
        }
        let _ = run_command(
            Command::new("psql")
                .arg(&self.postgres_admin)
                .args(["-c", &format!("DROP DATABASE IF EXISTS sf_{}", self.run)]),
            None,
        );
        let _ = run_command(
            Command::new("curl")
                .args(["-fs", "-XPOST"])
                .arg(format!("http://{}/query", self.influx))
                .args([
                    "--data-urlencode",
                    &format!("q=DROP DATABASE \"{}\"", self.run),
                ]),
            None,
        );
        let _ = run_command(
            Command::new("sh").arg("-c").arg(format!(
                "redis-cli -u {} --scan --pattern '{}:*' | xargs -r redis-cli -u {} del",
                self.redis, self.run, self.redis
            )),
            None,
        );
    }
}

/// The cluster, or `None` after saying why (a failure under `CI`).
fn cluster() -> Option<Cluster> {
    let missing: Vec<&str> = VARS.into_iter().filter(|v| var(v).is_empty()).collect();
    if !missing.is_empty() {
        unavailable(&format!(
            "{} not set: `scripts/testenv up kube node`, then `eval \"$(scripts/testenv env)\"` \
             (make test does both)",
            missing.join(", ")
        ));
        return None;
    }
    let kubectl = PathBuf::from(var("SENSORFLEET_KUBECTL"));
    let kubeconfig = PathBuf::from(var("SENSORFLEET_TEST_KUBECONFIG"));
    let node = var("SENSORFLEET_TEST_NODE");
    let ready = run_command(
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "get",
                "node",
                &node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]),
        None,
    );
    if String::from_utf8_lossy(&ready.stdout).trim() != "True" {
        unavailable(&format!(
            "the node {node} is not Ready: `scripts/testenv up node` (its log: \
             /var/cache/sensorfleet/testenv/node/kubelet.log): {}",
            String::from_utf8_lossy(&ready.stderr).trim()
        ));
        return None;
    }
    for (tool, package) in [
        ("mosquitto_pub", "mosquitto-clients"),
        ("psql", "postgresql-client"),
    ] {
        if !support::require_tool(tool, package) {
            return None;
        }
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let run = format!("cl{}x{}", std::process::id(), nanos % 1_000_000);
    Some(Cluster {
        kubectl,
        helm: PathBuf::from(var("SENSORFLEET_HELM")),
        kubeconfig,
        namespace: format!("sf-{run}"),
        node_ip: var("SENSORFLEET_TEST_NODE_IP"),
        postgres_admin: var("SENSORFLEET_TEST_POSTGRES_URL"),
        influx: authority(&var("SENSORFLEET_TEST_INFLUX_URL"))
            .parse()
            .expect("InfluxDB host:port"),
        redis: var("SENSORFLEET_TEST_REDIS_URL"),
        mqtt_port: port_of(&var("SENSORFLEET_TEST_MQTT_URL")).to_owned(),
        dir: tempfile::tempdir().expect("temp dir"),
        run,
    })
}

/// `examples/node/pipeline.yaml` (the services at the node's address) with this run's
/// own database, topic, key prefix and Secret; `moving_average` is what the test edits
/// to roll every worker.
fn pipeline(c: &Cluster, moving_average: u32) -> String {
    let path = Path::new(ROOT).join("examples/node/pipeline.yaml");
    let text = std::fs::read_to_string(&path).expect("examples/node/pipeline.yaml");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("the example Pipeline");
    let run = &c.run;
    let spec = &mut doc["spec"];
    let redis = spec["redis"]["url"].as_str().expect("redis url").to_owned();
    assert!(
        redis.contains(&c.node_ip),
        "the example reaches Redis at the node's address {}: {redis}",
        c.node_ip
    );
    spec["redis"]["url"] = format!("{redis}?prefix={run}:").into();
    spec["kafka"]["topic"] = format!("{run}-readings").into();
    spec["influxdb"]["database"] = run.as_str().into();
    spec["postgres"]["urlSecret"] = format!("{run}-postgres").into();
    spec["processor"]["movingAverage"] = moving_average.into();
    serde_yaml::to_string(&doc).expect("the Pipeline as YAML")
}

/// A fleet of `count` devices whose ids start with `prefix`.
fn fleet(name: &str, prefix: &str, count: usize) -> String {
    format!(
        "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata: {{name: {name}}}\n\
         spec:\n  pipeline: {PIPELINE}\n  deviceType: temperature_sensor\n  location: Lab\n  \
         publishInterval: 1s\n  offlineAfter: 10m\n  generate: {{count: {count}, idPrefix: {prefix}}}\n"
    )
}

/// The run's own fleet (ids `<run>-s01`…) and a rule that fires above 30 °C.
fn fleet_with_rule(run: &str) -> String {
    format!(
        "{}---\napiVersion: iot.sensorfleet.dev/v1alpha1\nkind: AlertRule\nmetadata: {{name: {run}-hot}}\n\
         spec:\n  deviceType: temperature_sensor\n  fleet: {run}\n  metric: temperature_celsius\n  \
         max: 30\n  severity: critical\n",
        fleet(run, &format!("{run}-s"), DEVICES)
    )
}

/// The ids of the run's fleet, made the way the operator and `simulate` make them
/// (`<run>-s0001`…: zero-padded to at least four digits).
fn our_devices(run: &str) -> Vec<String> {
    let yaml = fleet(run, &format!("{run}-s"), DEVICES);
    let fleet: SensorFleet = serde_yaml::from_str(&yaml).expect("the run's SensorFleet");
    declared_devices(run, &fleet.spec)
        .into_iter()
        .map(|d| d.device_id)
        .collect()
}

fn reading(device: &str, celsius: f64) -> String {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"{{"device_id":"{device}","device_type":"temperature_sensor","timestamp":"{ts}","temperature_celsius":{celsius}}}"#
    )
}

async fn api_json(api: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let response = HttpClient::new(api).get(path).await.ok()?;
    (response.status == 200).then(|| response.json())
}

fn pods_ready(c: &Cluster, component: &str, want: usize) -> bool {
    let ready = c.jsonpath(
        "pods",
        &format!(
            "{{range .items[?(@.metadata.labels.app\\.kubernetes\\.io/component==\"{component}\")]}}\
             {{.status.conditions[?(@.type==\"Ready\")].status}} {{end}}"
        ),
    );
    ready.split_whitespace().filter(|s| *s == "True").count() >= want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_on_a_real_node_and_loses_no_reading() {
    let Some(c) = cluster() else {
        return;
    };
    let started = Instant::now();

    // The image, from the release binary this test run built.
    succeed(
        Command::new(Path::new(ROOT).join("scripts/testenv")).args(["image", IMAGE, BIN]),
        None,
    );

    // The chart, as a user installs it.
    succeed(
        Command::new(&c.helm)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(["install", "sensorfleet"])
            .arg(Path::new(ROOT).join("charts/sensorfleet"))
            .args(["-n", &c.namespace, "--create-namespace"])
            .args(["--set", "image.pullPolicy=Never"])
            // The live status (onlineCount, firingCount) is recounted at every resync.
            .args(["--set", "operator.resync=5s"]),
        None,
    );
    c.wait(180, "the operator Ready", |c| pods_ready(c, "operator", 1));

    // The backends' Secret, the Pipeline, the examples and the run's fleet.
    psql(&c.postgres_admin, &format!("CREATE DATABASE sf_{}", c.run));
    let (base, _) = c.postgres_admin.rsplit_once('/').expect("postgres URL");
    let in_pod = base.replace(authority(base), &format!("{}:{}", c.node_ip, port_of(base)));
    c.kube(&[
        "create",
        "secret",
        "generic",
        &format!("{}-postgres", c.run),
        &format!("--from-literal=url={in_pod}/sf_{}", c.run),
    ]);
    c.apply(&pipeline(&c, 10));
    c.kube(&["apply", "-f", &format!("{ROOT}/examples/")]);
    let run = c.run.clone();
    for (file, yaml) in [
        ("fleet.yaml", fleet_with_rule(&run)),
        (
            "bench.yaml",
            fleet(&format!("{run}-bench"), &format!("{run}-b"), 2_000),
        ),
    ] {
        let path = c.dir.path().join(file);
        std::fs::write(&path, yaml).expect("write fleet");
        c.kube(&["apply", "-f", &path.display().to_string()]);
    }
    let ours = format!("{run}-s");

    c.wait(300, "2 bridges, a processor and the API Ready", |c| {
        pods_ready(c, "bridge", 2) && pods_ready(c, "processor", 1) && pods_ready(c, "api", 1)
    });
    eprintln!("all pods Ready after {:?}", started.elapsed());
    let api = c.service(&format!("{PIPELINE}-api"));

    // The operator's own endpoints answer on its pod's port, through its Service.
    let operator = c.service("sensorfleet-operator-metrics");
    let metrics = c
        .eventually(
            60,
            "the operator's /metrics with its reconciles",
            || async move {
                let response = HttpClient::new(operator).get("/metrics").await.ok()?;
                let text = String::from_utf8_lossy(&response.body).into_owned();
                (response.status == 200 && text.contains("sensorfleet_operator_reconciles_total{"))
                    .then_some(text)
            },
        )
        .await;
    assert!(
        metrics.contains("kind=\"Pipeline\""),
        "the operator's /metrics counts Pipeline reconciles: {metrics}"
    );
    let ready = HttpClient::new(operator)
        .get("/health/ready")
        .await
        .expect("the operator's /health/ready");
    assert_eq!(ready.status, 200, "the operator's /health/ready");

    // Readings through the API's Service.
    finish(
        c.simulate("fleet.yaml", FIRST, 400, 1),
        "the first simulate",
    );
    c.eventually(120, "the first stream in InfluxDB", || {
        let (c, ours) = (&c, &ours);
        async move { (c.stored(ours).await >= FIRST).then_some(()) }
    })
    .await;
    let devices = our_devices(&run);
    let device = devices[0].clone();
    let latest = c
        .eventually(
            60,
            "a simulated device's latest value through the API",
            || {
                let path = format!("/api/device/{device}/latest");
                async move {
                    api_json(api, &path)
                        .await
                        .filter(|j| j["temperature_celsius"].is_number())
                }
            },
        )
        .await;
    assert_eq!(latest["device_id"], device.as_str(), "{latest}");

    // An alert, fired in the cluster, read through the API.
    let hot = devices[1].clone();
    for _ in 0..3 {
        succeed(
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &c.mqtt_port, "-q", "1"])
                .args(["-t", &format!("sensors/temperature_sensor/{hot}")])
                .args(["-m", &reading(&hot, 41.5)]),
            None,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The device's own detectors (anomaly, spike) may fire on the jump too: the one
    // looked for is the rule's.
    let rule = format!("{}-hot", c.run);
    let alert = c
        .eventually(90, "the too-hot alert through the API", || {
            let (hot, rule) = (hot.clone(), rule.clone());
            async move {
                let json = api_json(api, &format!("/api/alerts?device_id={hot}")).await?;
                json["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| a["device_id"] == hot.as_str() && a["rule"] == rule.as_str())
                    .cloned()
            }
        })
        .await;
    assert_eq!(alert["alert_type"], "threshold", "{alert}");
    assert_eq!(alert["severity"], "critical", "{alert}");

    // The live status `kubectl get sf` and `kubectl get alertrule` show: every device of
    // the run's fleet reported (and stays online for its 10 minutes), none of the bench
    // fleet has yet; the rule's alert is firing.
    let status = c
        .eventually(
            60,
            "the fleets' ONLINE count and the rule's firing count",
            || {
                let (c, run, rule) = (&c, &run, &rule);
                async move {
                    let online = c.jsonpath(&format!("sensorfleet/{run}"), "{.status.onlineCount}");
                    let bench =
                        c.jsonpath(&format!("sensorfleet/{run}-bench"), "{.status.onlineCount}");
                    let firing = c.jsonpath(&format!("alertrule/{rule}"), "{.status.firingCount}");
                    let fired = c.jsonpath(&format!("alertrule/{rule}"), "{.status.lastFired}");
                    (online == DEVICES.to_string() && firing.parse::<u64>().is_ok_and(|n| n >= 1))
                        .then_some((bench, fired))
                }
            },
        )
        .await;
    assert_eq!(status.0, "0", "no bench device has published yet");
    assert!(
        status.1.starts_with("20"),
        "the rule's lastFired is set: {:?}",
        status.1
    );
    eprintln!(
        "{}",
        String::from_utf8_lossy(&run_command(&mut c.kubectl(&["get", "sf"]), None).stdout)
    );
    let before = c
        .eventually(60, "the hot readings in InfluxDB", || {
            let (c, ours) = (&c, &ours);
            async move {
                let n = c.stored(ours).await;
                (n >= FIRST + 3).then_some(n)
            }
        })
        .await;
    assert_eq!(
        before,
        FIRST + 3,
        "the first stream and the 3 hot readings, once each"
    );

    // A stream while a bridge pod is deleted, the Pipeline rolls, a processor is killed.
    let bridge = format!("statefulset/{PIPELINE}-bridge");
    let first_revision = c.jsonpath(&bridge, "{.status.updateRevision}");
    let stream = c.simulate("fleet.yaml", SECOND, 300, 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.kube(&[
        "delete",
        "pod",
        &format!("{PIPELINE}-bridge-1"),
        "--wait=false",
    ]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.apply(&pipeline(&c, 11));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let processor = c.jsonpath(
        "pods",
        "{.items[?(@.metadata.labels.app\\.kubernetes\\.io/component==\"processor\")].metadata.name}",
    );
    let victim = processor
        .split_whitespace()
        .next()
        .expect("a processor pod")
        .to_owned();
    c.kube(&[
        "delete",
        "pod",
        &victim,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    finish(stream, "the second simulate");
    c.wait(300, "the rollout of every worker", |c| {
        c.rolled_out(&bridge)
            && c.rolled_out(&format!("deployment/{PIPELINE}-processor"))
            && c.rolled_out(&format!("deployment/{PIPELINE}-api"))
    });
    let want = before + SECOND;
    let settled = c
        .eventually(
            180,
            "every reading of the second stream in InfluxDB",
            || {
                let (c, ours) = (&c, &ours);
                async move {
                    let n = c.stored(ours).await;
                    (n >= want).then_some(n)
                }
            },
        )
        .await;
    // Nothing late on the way: the count stays where it is.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(settled, want, "every published reading stored once");
    assert_eq!(
        c.stored(&ours).await,
        want,
        "every published reading stored once"
    );
    // The edit rolled the bridges onto a new revision (the others' rollouts were waited for).
    let revisions = c.jsonpath(
        &bridge,
        "{.status.currentRevision} {.status.updateRevision}",
    );
    assert_ne!(
        revisions.split_whitespace().next(),
        Some(first_revision.as_str()),
        "the Pipeline edit rolls the bridges: revisions {revisions}, before the edit {first_revision}"
    );

    // Throughput in the cluster, for BENCHMARKS.md (printed, not asserted).
    let t0 = Instant::now();
    let bench = c.simulate("bench.yaml", BENCH, 0, 3);
    let theirs = format!("{run}-b");
    c.eventually(300, "the throughput run in InfluxDB", || {
        let (c, theirs) = (&c, &theirs);
        async move { (c.stored(theirs).await >= BENCH).then_some(()) }
    })
    .await;
    let seconds = t0.elapsed().as_secs_f64();
    finish(bench, "the throughput simulate");
    eprintln!(
        "in-cluster throughput: {BENCH} readings published and stored in {seconds:.1} s = {:.0} readings/s",
        BENCH as f64 / seconds
    );
    eprintln!("cluster test done in {:?}", started.elapsed());
}

fn psql(url: &str, sql: &str) {
    succeed(Command::new("psql").arg(url).args(["-c", sql]), None);
}
