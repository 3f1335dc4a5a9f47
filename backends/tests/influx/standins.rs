//! The retries and the v2 write path against stand-in HTTP servers: a real server cannot
//! be made to answer 503 or 429 on demand, and the test environment's InfluxDB (1.6) has
//! no `/api/v2/write`.

use super::*;

#[tokio::test]
async fn connection_refused_is_unavailable_after_bounded_retries() {
    let options = InfluxOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(10),
        },
        ..InfluxOptions::default()
    };
    let started = Instant::now();
    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    let error = InfluxStore::connect("influx://127.0.0.1:1?db=sensors", options)
        .await
        .expect_err("nothing listens on port 1");
    let elapsed = started.elapsed();
    let BackendError::Unavailable { detail, .. } = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert!(error.is_transient());
    assert!(detail.contains("127.0.0.1:1"), "names the server: {detail}");
    assert!(
        detail.contains("3 attempt"),
        "says how hard it tried: {detail}"
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "waited 100 + 200 ms between the attempts, no more: {elapsed:?}"
    );
}

/// A stand-in server answering every request from `answer(path, whole request)` and
/// counting requests.
async fn fake_server(
    answer: impl Fn(&str, &str) -> String + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // The head, then as much body as Content-Length says.
                loop {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let reply = answer(&path, &text);
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (address, requests)
}

fn reply(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn server_errors_are_retried_then_unavailable_and_a_missing_permission_is_tolerated() {
    let (address, requests) = fake_server(|path, _| {
        if path.starts_with("/query") {
            // A user without the right to CREATE DATABASE.
            reply(
                "403 Forbidden",
                "",
                r#"{"error":"not authorized to execute statement"}"#,
            )
        } else if path.starts_with("/write") {
            reply(
                "503 Service Unavailable",
                "",
                r#"{"error":"engine: cache maximum memory size exceeded"}"#,
            )
        } else {
            reply("404 Not Found", "", "{}")
        }
    })
    .await;
    let options = InfluxOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(10),
        },
        ..InfluxOptions::default()
    };
    let store = InfluxStore::connect(&format!("influx://{address}?db=sensors"), options)
        .await
        .expect("a refused CREATE DATABASE is logged, not fatal");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    let error = store
        .write(&[reading("d", "t", None, BASE, &[("v", 1.0)])])
        .await
        .expect_err("the server keeps failing");
    assert!(
        matches!(error, BackendError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("cache maximum memory size"),
        "{error}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1 + 3,
        "three write attempts"
    );
}

#[tokio::test]
async fn too_many_requests_is_retried_until_it_passes() {
    let writes = Arc::new(AtomicUsize::new(0));
    let seen = writes.clone();
    let (address, _) = fake_server(move |path, _| {
        if path.starts_with("/write") && seen.fetch_add(1, Ordering::SeqCst) == 0 {
            reply(
                "429 Too Many Requests",
                "Retry-After: 0\r\n",
                r#"{"error":"slow down"}"#,
            )
        } else if path.starts_with("/write") {
            reply("204 No Content", "", "")
        } else {
            reply("200 OK", "", r#"{"results":[{"statement_id":0}]}"#)
        }
    })
    .await;
    let store = InfluxStore::connect(
        &format!("influx://{address}?db=sensors"),
        InfluxOptions::default(),
    )
    .await
    .expect("connect");
    store
        .write(&[reading("d", "t", None, BASE, &[("v", 1.0)])])
        .await
        .expect("the second attempt succeeds");
    assert_eq!(writes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_v2_api_writes_with_org_bucket_and_token_and_reads_through_v1() {
    // The test environment's InfluxDB 1.6 has no /api/v2: a stand-in checks what arrives.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let (address, _) = fake_server(move |path, request| {
        log.lock().expect("lock").push(request.to_owned());
        if path == "/ping" || path.starts_with("/api/v2/write") {
            reply("204 No Content", "", "")
        } else if path.starts_with("/query") {
            reply(
                "200 OK",
                "",
                r#"{"results":[{"statement_id":0,"series":[{"name":"t","columns":["time","v"],"values":[[1780000000000,1.5]]}]}]}"#,
            )
        } else {
            reply("404 Not Found", "", r#"{"code":"not found","message":"path not found"}"#)
        }
    })
    .await;
    let options = InfluxOptions {
        token: Some("tok-123".to_owned()),
        ..InfluxOptions::default()
    };
    let store = InfluxStore::connect(
        &format!("influx://{address}?org=acme&bucket=sensors"),
        options,
    )
    .await
    .expect("connect pings, creates nothing");
    store
        .write(&[reading("d-1", "t", None, 1_780_000_000_000, &[("v", 1.5)])])
        .await
        .expect("write");
    let points = store
        .history(&history("d-1", BASE, BASE + 10 * HOUR))
        .await
        .expect("history");
    assert_eq!(points.len(), 1);
    let requests = seen.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert!(requests[0].starts_with("GET /ping "), "{}", requests[0]);
    let write = &requests[1];
    assert!(
        write.starts_with("POST /api/v2/write?org=acme&bucket=sensors&precision=ms "),
        "{write}"
    );
    assert!(
        write
            .to_ascii_lowercase()
            .contains("authorization: token tok-123\r\n"),
        "{write}"
    );
    assert!(
        write.ends_with("\r\n\r\nt,device_id=d-1 v=1.5 1780000000000\n"),
        "{write}"
    );
    let query = &requests[2];
    assert!(
        query.starts_with("POST /query?db=sensors&epoch=ms&chunked=true"),
        "reads use the v1 API on the bucket's DBRP mapping: {query}"
    );
    assert!(
        query
            .to_ascii_lowercase()
            .contains("authorization: token tok-123\r\n"),
        "{query}"
    );
}
