//! The Redis cache across a server restart: its own `redis-server` on a free port (never
//! the shared test server), stopped and started again under a connected [`RedisCache`].

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sensorfleet_backends::cache::redis::RedisCache;
use sensorfleet_backends::{BackendError, Cache, LiveEvent};
use sensorfleet_model::Reading;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(port: u16) -> Server {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    Server(child)
}

fn reading(device_id: &str, ts_ms: i64) -> Reading {
    Reading {
        device_id: device_id.to_owned(),
        device_type: "temperature_sensor".to_owned(),
        location: None,
        ts_ms,
        fields: [("temperature_celsius".to_owned(), 20.0)].into(),
    }
}

#[tokio::test]
async fn redis_cache_recovers_after_a_server_restart() {
    let found = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let message = "redis-server is not installed (`scripts/install-deps services`)";
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");

    let server = start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let cache = loop {
        match RedisCache::connect(&url).await {
            Ok(cache) => break cache,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the private redis-server never answered: {e}"),
        }
    };
    cache.put_latest(&[reading("r-1", 1)]).await.expect("put");

    drop(server);
    // Queued while fred reconnects, then failed by the command timeout (10 s).
    let started = Instant::now();
    let down = cache.latest("r-1").await;
    eprintln!("while down, after {:?}: {down:?}", started.elapsed());
    assert!(
        matches!(down, Err(BackendError::Unavailable { .. })),
        "a stopped server is Unavailable, got {down:?}"
    );

    let _server = start(port);
    let mut live = cache.live();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cache.put_latest(&[reading("r-2", 2)]).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery after the restart: {e}"),
        }
    }
    eprintln!("writes again after {:?}", started.elapsed());
    // The subscriber resubscribes on its own; wait for an event published after that.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        cache.put_latest(&[reading("r-3", 3)]).await.expect("put");
        match tokio::time::timeout(Duration::from_millis(500), live.recv()).await {
            Ok(Ok(LiveEvent::Reading(r))) if r.device_id == "r-3" => break,
            _ if Instant::now() < deadline => {}
            other => panic!("no live event after the restart: {other:?}"),
        }
    }
    eprintln!("live again after {:?}", started.elapsed());
    assert_eq!(
        cache.latest("r-3").await.expect("latest").map(|r| r.ts_ms),
        Some(3)
    );
}
