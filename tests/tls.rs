//! TLS to the backends, each against the real service with TLS turned on (a private
//! instance the test starts, with a private CA made for the run): an `influxs://` URL is
//! only ever reached over TLS, verified against the CA bundle `SSL_CERT_FILE` names (as
//! a Pipeline's CA mounts in a pod), authenticated with the user and password the
//! operator renders from a Secret, and an untrusted server is refused with a sentence
//! that says so.

mod support;

use std::process::Command;

use support::Up;
use support::services::{Kind, Service};

const USER: &str = "sensorfleet";
const PASSWORD: &str = "influxS3cret-pw-41d9";

fn count(influx: &Service) -> u64 {
    let output = influx
        .curl(
            &[
                "-u",
                &format!("{USER}:{PASSWORD}"),
                "-G",
                "--data-urlencode",
                "db=sensors",
            ],
            "/query?q=SELECT%20count(*)%20FROM%20%2F.*%2F",
        )
        .output()
        .expect("run curl");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["values"][0].as_array())
        .flat_map(|row| {
            row.iter()
                .skip(1)
                .filter_map(serde_json::Value::as_u64)
                .max()
        })
        .sum()
}

fn rollup(url: &str, ca: Option<&std::path::Path>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sensorfleet"));
    command
        .args(["rollup", "--hours", "1", "--connect-timeout", "3s"])
        .env("SENSORFLEET_INFLUX_URL", url)
        .env("SENSORFLEET_LOG", "debug")
        .env_remove("SSL_CERT_FILE");
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    command.output().expect("run sensorfleet rollup")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_over_tls_is_verified_authenticated_and_never_plain() {
    let Some(influx) = Service::start_tls(Kind::Influx) else {
        return;
    };
    influx.influx_admin(USER, PASSWORD);
    let ca = influx.ca().expect("a TLS instance has a CA").to_owned();
    // The user and password as the operator renders them from a Secret: in the URL's
    // user part, sent as HTTP Basic auth (InfluxDB 1.x).
    let at = |password: &str| {
        influx
            .url()
            .replacen("://", &format!("://{USER}:{password}@"), 1)
            + "?db=sensors"
    };
    let url = at(PASSWORD);
    assert!(url.starts_with("influxs://"), "{url}");

    // A server whose CA the client does not trust is refused, and the error says why.
    let untrusted = rollup(&url, None);
    assert!(!untrusted.status.success(), "{}", text(&untrusted));
    let said = text(&untrusted).to_lowercase();
    assert!(
        said.contains("certificate"),
        "names the certificate:\n{said}"
    );
    // Trusted CA, right password: it works; a wrong one: refused as unauthorised.
    let trusted = rollup(&url, Some(&ca));
    assert!(trusted.status.success(), "{}", text(&trusted));
    let wrong = rollup(&at("not-the-password"), Some(&ca));
    assert!(!wrong.status.success(), "{}", text(&wrong));
    assert!(text(&wrong).contains("401"), "{}", text(&wrong));
    // A plain URL to the TLS port does not get an answer either (no silent fallback
    // the other way).
    let plain = rollup(&url.replacen("influxs://", "influx://", 1), Some(&ca));
    assert!(!plain.status.success(), "{}", text(&plain));
    for output in [&untrusted, &trusted, &wrong, &plain] {
        assert!(
            !text(output).contains(PASSWORD),
            "the password is printed:\n{}",
            text(output)
        );
    }

    // `up` writing its readings there, over TLS, with the token from the environment.
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_text = ca.display().to_string();
    let up = Up::start_as(
        dir.path(),
        &["--simulate-interval", "100ms"],
        &[
            ("SSL_CERT_FILE", ca_text.as_str()),
            ("SENSORFLEET_INFLUX_URL", url.as_str()),
        ],
        None,
    )
    .await;
    let stored = support::eventually(60, "readings stored in InfluxDB over TLS", || async {
        let n = count(&influx);
        (n > 50).then_some(n)
    })
    .await;
    assert!(stored > 50);
    assert!(
        !up.log_text().contains(PASSWORD),
        "the log shows the password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_is_verified_and_never_plain() {
    let Some(broker) = Service::start_tls(Kind::Mosquitto) else {
        return;
    };
    let Some(mut stack) = support::stack::Stack::start("mqtts") else {
        return;
    };
    stack.use_service(&broker);
    let ca = broker.ca().expect("a TLS instance has a CA").to_owned();
    let device = format!("{}-tls-1", stack.run);
    let publish = |celsius: f64| {
        let reading =
            support::fleet::reading(&device, chrono::Utc::now().timestamp_millis(), celsius);
        let status = support::mosquitto_pub(broker.port)
            .arg("--cafile")
            .arg(&ca)
            .args([
                "-t",
                &format!("sensors/temperature_sensor/{device}"),
                "-m",
                &reading,
            ])
            .status()
            .expect("run mosquitto_pub");
        assert!(status.success(), "mosquitto_pub over TLS");
    };

    // A bridge that does not trust the broker's CA never connects, and says why.
    let system_bundle = (
        "SSL_CERT_FILE",
        "/etc/ssl/certs/ca-certificates.crt".to_owned(),
    );
    let mut untrusted = stack.role_env("bridge", &[], &[system_bundle]);
    let said = support::eventually(30, "the untrusting bridge names the certificate", || {
        let text = untrusted.log_text();
        async move { text.to_lowercase().contains("certificate").then_some(text) }
    })
    .await;
    assert!(!said.contains("connected to MQTT broker"), "{said}");
    // A plain mqtt:// bridge to the TLS port never gets a session either.
    let plain_url = (
        "SENSORFLEET_MQTT_URL",
        format!("mqtt://127.0.0.1:{}", broker.port),
    );
    let mut plain = stack.role_env("bridge", &[], &[plain_url]);
    publish(21.5);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        support::fleet::influx_count(&stack, &format!("^{device}$")).await,
        0
    );
    untrusted.stop();
    plain.stop();
    assert!(
        !plain.log_text().contains("connected to MQTT broker"),
        "{}",
        plain.log_text()
    );

    // With the CA (SSL_CERT_FILE, as a Pipeline's caSecret mounts it): every reading.
    let bridge = stack.role("bridge", &[]);
    bridge.ready(60).await;
    // Published until one is stored: the broker keeps nothing for a subscriber that has
    // never had a session, and ready need not mean subscribed yet.
    let stored = support::eventually(60, "a reading over mqtts:// in InfluxDB", || {
        publish(22.5);
        let (stack, regex) = (&stack, format!("^{device}$"));
        async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let n = support::fleet::influx_count(stack, &regex).await;
            (n > 0).then_some(n)
        }
    })
    .await;
    assert!(stored > 0);
    assert!(
        bridge.log_text().contains("mqtts://"),
        "{}",
        bridge.log_text()
    );
}
