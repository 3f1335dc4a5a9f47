//! The API keeps the contract its OpenAPI document states: schemathesis (PyPI, installed
//! by `scripts/install-schemathesis`; `make test` points `SENSORFLEET_SCHEMATHESIS` at it)
//! runs every check it has against a running `sensorfleet up` with auth on, with data
//! the built-in simulator publishes, and reports no failure: every schema-valid request
//! is accepted, every invalid one refused with a documented 4xx, every answer matches
//! its documented status, content type and schema, and no route ignores its credential.
//!
//! `GET /api/ws` is left out: its document states the handshake (the upgrade headers,
//! 101, and JSON errors for a request that is not one), but an HTTP fuzzer cannot speak
//! WebSocket past the 101. `tests/api_access.rs` checks that route's answers instead.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::Up;

const TOKEN: &str = "contract-admin-token-5d2c9e81f0";

fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("SENSORFLEET_SCHEMATHESIS")
        .map(PathBuf::from)
        .or_else(|| {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-schemathesis");
            let out = Command::new(script).arg("--path").output().ok()?;
            Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .filter(|p| p.is_file());
    if path.is_none() {
        let why =
            "schemathesis is not installed: run scripts/install-schemathesis (make deps does)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_failure_with_auth_on() {
    let Some(st) = schemathesis() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let up = Up::start_as(
        dir.path(),
        &[],
        &[("SENSORFLEET_API_TOKEN", TOKEN)],
        Some(TOKEN),
    )
    .await;
    let reports = dir.path().join("schemathesis");
    let output = tokio::task::spawn_blocking({
        let url = format!("http://{}/api/openapi.json", up.http);
        let reports = reports.clone();
        move || {
            std::fs::create_dir_all(&reports).expect("reports dir");
            Command::new(st)
                .args(["run", &url, "--checks", "all", "--no-color"])
                .args(["--exclude-path", "/api/ws"])
                .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                .args([
                    "--max-examples",
                    "40",
                    "--seed",
                    "20261207",
                    "--workers",
                    "1",
                ])
                .args(["--request-timeout", "10", "--max-time", "150"])
                .args(["--report", "junit", "--report-dir"])
                .arg(&reports)
                .env("SCHEMATHESIS_HOOKS", "")
                // Its example database goes in the run's temp dir, not the clone.
                .current_dir(&reports)
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .expect("schemathesis ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(
        output.status.success(),
        "schemathesis found contract failures:\n{text}"
    );
    // It really tested the operations, not an empty document.
    let number_after = |label: &str| -> u64 {
        text.split(label)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or(0)
    };
    assert!(
        number_after("Tested:") >= 13,
        "every operation but the WebSocket:
{text}"
    );
    assert!(
        number_after("Test cases:") >= 1000,
        "thousands of cases:\n{text}"
    );
    assert!(!up.log_text().contains(TOKEN), "the token reached the log");
}
