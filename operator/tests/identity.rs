//! Device identity at a real broker (issue 12): the operator's controllers against the
//! real API server and PostgreSQL, provisioning the dynamic-security listener of the
//! test environment's Mosquitto (`SENSORFLEET_TEST_MQTT_AUTH_URL`, the admin's login in
//! it). What the broker then admits is tried with real MQTT clients.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use sensorfleet_backends::conformance::service_url;
use sensorfleet_model::SensorFleet;
use sensorfleet_model::crd::pipeline::DeviceAuthSpec;
use sensorfleet_model::crd::status::{ConditionStatus, READY, find_condition};
use sensorfleet_model::credentials::{device_password, secret_from_hex};
use sensorfleet_operator::identity::dynsec::{Broker, Dynsec, admits};
use sensorfleet_operator::identity::{PASSWORDS_KEY, SECRET_KEY, secret_name};
use serde_json::json;
use support::*;

const MQTT_AUTH_VAR: &str = "SENSORFLEET_TEST_MQTT_AUTH_URL";

/// The broker and its admin from `mqtt://user:password@host:port`.
fn broker(url: &str) -> Broker {
    let rest = url.strip_prefix("mqtt://").expect("mqtt:// URL");
    let (login, address) = rest.rsplit_once('@').expect("the admin's login in the URL");
    let (username, password) = login.split_once(':').expect("user:password");
    let (host, port, tls) = Broker::address(&format!("mqtt://{address}")).expect("host:port");
    Broker {
        host,
        port,
        username: username.into(),
        password: password.into(),
        tls,
    }
}

/// A connected client, or `None` when the broker refused it.
async fn connect(
    broker: &Broker,
    client_id: &str,
    login: (&str, &str),
) -> Option<(AsyncClient, EventLoop)> {
    let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
    options.set_credentials(login.0, login.1);
    let (client, mut events) = AsyncClient::new(options, 16);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Some((client, events)),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => panic!("no CONNACK from {broker:?} within 10 s"),
        }
    }
}

/// Drives `events` until `until` says stop or `limit` passes; every publish received.
async fn received(
    events: &mut EventLoop,
    limit: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                got.push(format!(
                    "{} {}",
                    p.topic,
                    String::from_utf8_lossy(&p.payload)
                ));
                if until(&got) {
                    return;
                }
            }
        }
    })
    .await;
    got
}

/// The SUBACK codes of subscribing to `filter`.
async fn subscribe(
    client: &AsyncClient,
    events: &mut EventLoop,
    filter: &str,
) -> Vec<SubscribeReasonCode> {
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => return ack.return_codes,
            Ok(Ok(_)) => {}
            other => panic!("no SUBACK for {filter}: {other:?}"),
        }
    }
}

/// Publishes at QoS 1 on a connection of its own; whether a PUBACK came. Mosquitto
/// acknowledges a publish its ACL drops and then closes the connection (MQTT 3.1.1 has
/// no way to say no), so a refused publish may end either way: what the subscriber
/// receives is the proof.
async fn publish(broker: &Broker, login: (&str, &str), topic: &str, payload: &str) -> bool {
    let (client, mut events) = connect(broker, login.0, login)
        .await
        .expect("device admitted");
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .expect("publish queued");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return false,
            Err(_) => panic!("no PUBACK for {topic} within 10 s"),
        }
    }
}

fn secret_object(name: &str, data: serde_json::Value) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).expect("secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_gives_each_declared_device_its_own_identity_at_the_broker() {
    let (kube, kafka_url, postgres_url, mqtt_url) = (
        kubeconfig(),
        service_url(KAFKA_VAR, "kafka"),
        service_url(POSTGRES_VAR, "postgres"),
        service_url(MQTT_AUTH_VAR, "mosquitto"),
    );
    let (Some(path), Some(kafka_url), Some(postgres_url), Some(mqtt_url)) =
        (kube, kafka_url, postgres_url, mqtt_url)
    else {
        return;
    };
    let admin = broker(&mqtt_url);
    let client = client(&path).await;
    apply_crds(&client).await;
    let ns = unique("sf-identity");
    let database = TestDatabase::create(&postgres_url, &ns.replace('-', "_")).await;
    // The broker is shared by every run: names carry the namespace.
    let bridge_user = format!("{ns}-bridge");
    let bridge_password = format!("{ns}-bridge-password");
    let url = format!("mqtt://{}:{}", admin.host, admin.port);
    namespace_with_pipeline(
        &client,
        &ns,
        &database.url,
        &bootstrap_servers(&kafka_url),
        &format!("{ns}-readings"),
        |p| {
            p.spec.mqtt.url = url;
            p.spec.mqtt.credentials_secret = Some("mqtt-bridge".into());
            p.spec.mqtt.device_auth = Some(DeviceAuthSpec {
                admin_secret: "mqtt-admin".into(),
            });
        },
    )
    .await;
    let _namespace = DeletedOnDrop(client.clone(), ns.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for secret in [
        secret_object(
            "mqtt-admin",
            json!({"username": admin.username, "password": admin.password}),
        ),
        secret_object(
            "mqtt-bridge",
            json!({"username": bridge_user, "password": bridge_password}),
        ),
    ] {
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("secret");
    }
    let running = start(&client, &ns, Duration::from_secs(3));

    let (one, two) = (format!("{ns}-t1"), format!("{ns}-t2"));
    let fleets: Api<SensorFleet> = Api::namespaced(client.clone(), &ns);
    let fleet: SensorFleet = yaml(&format!(
        "apiVersion: iot.sensorfleet.dev/v1alpha1\nkind: SensorFleet\nmetadata: {{name: lab}}\n\
         spec: {{deviceType: temperature, devices: [{{id: {one}}}, {{id: {two}}}]}}\n"
    ));
    fleets
        .create(&PostParams::default(), &fleet)
        .await
        .expect("fleet");
    let ready = |fleet: SensorFleet| {
        find_condition(&fleet.status?.conditions, READY)
            .filter(|c| c.status == ConditionStatus::True)
            .map(|c| c.message.clone())
    };
    let message = eventually("lab Ready", || async {
        ready(fleets.get("lab").await.ok()?)
    })
    .await;
    assert!(
        message.contains("2 device identities at the MQTT broker"),
        "{message}"
    );

    // The fleet's Secret: the secret and the two passwords derived from it.
    let data = secrets
        .get(&secret_name("lab"))
        .await
        .expect("credentials Secret")
        .data
        .expect("data");
    let secret = secret_from_hex(std::str::from_utf8(&data[SECRET_KEY].0).expect("hex"))
        .expect("fleet secret");
    let list = String::from_utf8(data[PASSWORDS_KEY].0.clone()).expect("csv");
    let password = |id: &str| device_password(&secret, id, 0);
    assert_eq!(
        list,
        format!(
            "device_id,password\n{one},{}\n{two},{}\n",
            password(&one),
            password(&two)
        )
    );

    // Who may connect: no anonymous client, no wrong password, a device only as itself.
    assert!(
        !admits(&admin, &format!("{ns}-anon"), None)
            .await
            .expect("broker answers")
    );
    let (pw1, pw2) = (password(&one), password(&two));
    assert!(
        !admits(&admin, &one, Some((&one, &pw2)))
            .await
            .expect("answer"),
        "another's password"
    );
    assert!(
        !admits(&admin, &two, Some((&one, &pw1)))
            .await
            .expect("answer"),
        "another's client id"
    );
    assert!(
        !admits(&admin, &format!("{bridge_user}-0"), Some((&one, &pw1)))
            .await
            .expect("answer"),
        "the bridge's client id"
    );
    assert!(
        admits(&admin, &one, Some((&one, &pw1)))
            .await
            .expect("answer")
    );

    // The bridge subscribes as the real one does (a shared group); a device may publish
    // to its own topic only.
    let (bridge, mut bridge_events) = connect(
        &admin,
        &format!("{bridge_user}-0"),
        (&bridge_user, &bridge_password),
    )
    .await
    .expect("bridge admitted");
    let codes = subscribe(
        &bridge,
        &mut bridge_events,
        "$share/sensorfleet-bridge/sensors/+/+",
    )
    .await;
    assert_eq!(
        codes,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "the bridge subscribes"
    );
    for (topic, payload) in [
        (format!("sensors/temperature/{two}"), "as-another-device"),
        (format!("sensors/humidity/{one}"), "as-another-type"),
        (format!("alerts/{one}"), "elsewhere"),
    ] {
        publish(&admin, (&one, &pw1), &topic, payload).await;
    }
    let own = format!("sensors/temperature/{one}");
    assert!(
        publish(&admin, (&one, &pw1), &own, "own").await,
        "own topic acknowledged"
    );
    // The broker handles each publish before it acknowledges it, and one subscriber's
    // queue keeps their order: had any earlier one passed, it would be here first.
    let got = received(&mut bridge_events, Duration::from_secs(10), |got| {
        got.iter().any(|m| m.ends_with(" own"))
    })
    .await;
    let ours: Vec<_> = got.iter().filter(|m| m.contains(&ns)).collect();
    assert_eq!(ours, [&format!("sensors/temperature/{one} own")]);

    // A device may not subscribe at all (on a connection of its own: Mosquitto closes
    // the connection after a refused subscription).
    let (device, mut device_events) = connect(&admin, &one, (&one, &pw1))
        .await
        .expect("device admitted");
    let codes = subscribe(&device, &mut device_events, "sensors/#").await;
    assert_eq!(
        codes,
        [SubscribeReasonCode::Failure],
        "a device may not subscribe"
    );

    // A device no longer declared is revoked; the other keeps its identity.
    let patch = json!({"spec": {"devices": [{"id": one}]}});
    fleets
        .patch("lab", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("fleet edited");
    eventually("t2 revoked", || async {
        (!admits(&admin, &two, Some((&two, &pw2))).await.ok()?).then_some(())
    })
    .await;
    assert!(
        admits(&admin, &one, Some((&one, &pw1)))
            .await
            .expect("answer"),
        "t1 stays"
    );

    // Deleting the fleet revokes the rest and removes its Secret.
    fleets
        .delete("lab", &DeleteParams::default())
        .await
        .expect("fleet deleted");
    eventually("t1 revoked and the Secret gone", || async {
        let revoked = !admits(&admin, &one, Some((&one, &pw1))).await.ok()?;
        let gone = secrets.get_opt(&secret_name("lab")).await.ok()?.is_none();
        (revoked && gone).then_some(())
    })
    .await;

    running.stop().await;
    // The bridge's user is the Pipeline's, not a fleet's: removed here, by the test.
    let mut dynsec = Dynsec::connect(&admin, &format!("{ns}-cleanup"))
        .await
        .expect("admin connects");
    dynsec
        .execute(&[json!({"command": "deleteClient", "username": bridge_user})])
        .await
        .expect("bridge user removed");
    database.drop_database().await;
}
