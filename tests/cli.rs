//! The binary's edges: errors a user meets before anything runs must say what was wrong
//! and what to do, and exit non-zero; `detect` replays a real series; `--help` teaches.

mod support;

use std::net::TcpListener;
use std::process::{Command, Output};

fn sensorfleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sensorfleet"))
        .args(args)
        .env("SENSORFLEET_LOG", "warn")
        .output()
        .expect("run sensorfleet")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_invalid_manifest_names_file_object_field_and_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("fleet.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata: {name: lab}\n\
         spec: {deviceType: temperature_sensor, generate: {count: 0, idPrefix: t-}}\n",
    )
    .expect("write manifest");
    let output = sensorfleet(&[
        "up",
        "-f",
        &manifest.display().to_string(),
        "--data-dir",
        &dir.path().display().to_string(),
    ]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("fleet.yaml: SensorFleet/lab: spec.generate.count: 0 must be between 1 and"),
        "{text}"
    );
}

#[test]
fn a_taken_port_says_which_flag_to_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let output = sensorfleet(&[
        "up",
        "--data-dir",
        &dir.path().display().to_string(),
        "--mqtt-addr",
        &addr,
        "--http-addr",
        &support::free_addr().to_string(),
    ]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains(&format!("cannot listen for MQTT on {addr}")) && text.contains("--mqtt-addr"),
        "{text}"
    );

    let output = sensorfleet(&[
        "up",
        "--data-dir",
        &dir.path().display().to_string(),
        "--mqtt-addr",
        &support::free_addr().to_string(),
        "--http-addr",
        &addr,
    ]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains(&format!("cannot listen for HTTP on {addr}")) && text.contains("--http-addr"),
        "{text}"
    );
}

#[test]
fn an_unusable_data_dir_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").expect("write");
    let data_dir = file.join("data");
    let output = sensorfleet(&["up", "--data-dir", &data_dir.display().to_string()]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("data dir") && text.contains("--data-dir"),
        "{text}"
    );
}

#[test]
fn detect_scores_every_row_of_a_real_series() {
    let csv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/nab/ec2_request_latency_system_failure.csv"
    );
    let output = sensorfleet(&["detect", "--csv", csv]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows[0], "timestamp,value,score,anomaly");
    assert_eq!(rows.len(), 4033, "a header and one row per reading");
    for row in &rows[1..] {
        let score: f64 = row
            .split(',')
            .nth(2)
            .and_then(|s| s.parse().ok())
            .expect("a score column");
        assert!((0.0..=1.0).contains(&score), "{row}");
    }
    assert!(
        rows.iter()
            .any(|r| r.ends_with(",statistical") || r.ends_with(",spike")),
        "some anomaly flagged"
    );
    assert!(stderr(&output).contains("4032 rows"));

    let missing = sensorfleet(&["detect", "--csv", "/no/such/file.csv"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("/no/such/file.csv"));
}

#[test]
fn help_teaches_the_roles() {
    let output = sensorfleet(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for role in ["up", "simulate", "detect", "bench"] {
        assert!(text.contains(role), "--help lists {role}");
    }
    let up = String::from_utf8_lossy(&sensorfleet(&["up", "--help"]).stdout).into_owned();
    assert!(
        up.contains("--mqtt-url") && up.contains("SENSORFLEET_DATA_DIR"),
        "{up}"
    );
}

/// Every setting the operator renders into a Pipeline's worker ConfigMap is read by a
/// role: its variable shows in the `--help` of `bridge`, `processor` or `api` (clap lists
/// each flag's `env`). A key no role reads would be a setting silently ignored in a cluster.
#[test]
fn every_worker_setting_the_operator_renders_is_read_by_a_role() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/operator/tests/fixtures/pipeline-full.yaml"
    ))
    .expect("the full Pipeline fixture");
    let pipeline: sensorfleet_model::Pipeline =
        serde_yaml::from_str(&text).expect("the fixture parses");
    let config = sensorfleet_operator::build::worker_config("main", &pipeline.spec);
    let help: String = ["bridge", "processor", "api"]
        .iter()
        .map(|role| String::from_utf8_lossy(&sensorfleet(&[role, "--help"]).stdout).into_owned())
        .collect();
    assert!(config.len() >= 10, "{config:?}");
    for key in config.keys() {
        assert!(
            help.contains(&format!("[env: {key}")),
            "{key} is rendered by the operator but no role reads it"
        );
    }
    // What one worker's container gets on top (Secrets, its own settings) is read by that
    // role itself.
    use sensorfleet_operator::build::{Worker, role_env, secret_env};
    for worker in Worker::ALL {
        let own =
            String::from_utf8_lossy(&sensorfleet(&[worker.role(), "--help"]).stdout).into_owned();
        let env = secret_env(worker, &pipeline.spec)
            .into_iter()
            .chain(role_env(worker, &pipeline.spec));
        for var in env {
            // The MQTT username and password only build the URL (`$(VAR)` references).
            if var.name.ends_with("_USERNAME") || var.name.ends_with("_PASSWORD") {
                continue;
            }
            assert!(
                own.contains(&format!("[env: {}", var.name)),
                "{} is set on the {} container but `sensorfleet {}` does not read it",
                var.name,
                worker.role(),
                worker.role()
            );
        }
    }
}

/// Passwords in every URL and a token, as a deployment sets them: no role's `--help`
/// shows them, and a role that fails to reach its backends does not print them either.
#[test]
fn no_secret_is_printed_by_help_or_by_a_failing_role() {
    const SECRETS: [(&str, &str); 9] = [
        (
            "SENSORFLEET_KAFKA_URL",
            "kafka://svc:kafkaS3cret@127.0.0.1:1",
        ),
        (
            "SENSORFLEET_INFLUX_URL",
            "influx://svc:influxS3cret@127.0.0.1:1?db=sensors",
        ),
        ("SENSORFLEET_REDIS_URL", "redis://:redisS3cret@127.0.0.1:1"),
        (
            "SENSORFLEET_POSTGRES_URL",
            "postgres://svc:pgS3cret@127.0.0.1:1/registry",
        ),
        ("SENSORFLEET_MQTT_URL", "mqtt://svc:mqttS3cret@127.0.0.1:1"),
        ("SENSORFLEET_API_TOKEN", "tokenS3cret-0123456789"),
        (
            "SENSORFLEET_API_KEYS",
            "grafana=viewer:keyS3cret-0123456789,ci=operator:keyS3cret-9876543210",
        ),
        (
            "SENSORFLEET_JWT_SECRET",
            "jwtS3cret-0123456789abcdef0123456789",
        ),
        ("SENSORFLEET_CONNECT_TIMEOUT", "1s"),
    ];
    // Each run is cut off after 15 s: a role that keeps retrying has printed enough.
    let run = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sensorfleet"));
        command
            .args(args)
            .env("SENSORFLEET_LOG", "debug")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (name, value) in SECRETS {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("run sensorfleet");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let output = child.wait_with_output().expect("output");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let roles = [
        "up",
        "simulate",
        "detect",
        "backtest",
        "bench",
        "credentials",
        "bridge",
        "processor",
        "api",
        "apply",
        "rollup",
        "crdgen",
        "operator",
    ];
    let mut printed = Vec::new();
    for role in roles {
        printed.push((format!("{role} --help"), run(&[role, "--help"])));
    }
    // Each worker role against backends that are not there: it fails, saying which.
    for role in ["bridge", "processor", "api", "rollup"] {
        let text = run(&[role]);
        assert!(!text.trim().is_empty(), "{role} says nothing");
        printed.push((role.to_owned(), text));
    }
    for (what, text) in &printed {
        assert!(!text.contains("S3cret"), "{what} printed a secret:\n{text}");
    }
}

#[test]
fn a_processor_window_below_a_second_is_refused_with_the_reason() {
    let output = sensorfleet(&["processor", "--window", "500ms"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("a window is at least 1s"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn credentials_derive_a_provisioned_device_password_from_the_fleet_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = [9u8; sensorfleet_model::credentials::SECRET_BYTES];
    let key = dir.path().join("lab.key");
    std::fs::write(
        &key,
        format!(
            "{}\n",
            sensorfleet_model::credentials::secret_to_hex(&secret)
        ),
    )
    .expect("key file");
    let key_arg = key.display().to_string();
    let output = sensorfleet(&[
        "credentials",
        "--fleet-secret-file",
        &key_arg,
        "--device",
        "lab-1",
        "--device",
        "lab-2",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = |id: &str| sensorfleet_model::credentials::device_password(&secret, id, 0);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "device_id,password\nlab-1,{}\nlab-2,{}\n",
            expected("lab-1"),
            expected("lab-2")
        )
    );
    // A file that is not a fleet secret is refused with what it should be; the secret
    // of a fleet is not rotated per device.
    std::fs::write(&key, "not hex").expect("bad key");
    let bad = sensorfleet(&[
        "credentials",
        "--fleet-secret-file",
        &key_arg,
        "--device",
        "a",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("64 hex digits"), "{}", stderr(&bad));
    let rotate = sensorfleet(&[
        "credentials",
        "--fleet-secret-file",
        &key_arg,
        "--rotate",
        "--device",
        "a",
    ]);
    assert!(!rotate.status.success());
}
