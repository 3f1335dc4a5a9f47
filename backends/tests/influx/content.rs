//! Hostile text that must round-trip, and the refusals that must be told apart: a refused
//! point is content (dead-lettered by the workers), a missing database is not.

use super::*;

#[tokio::test]
async fn hostile_locations_and_ids_round_trip() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server, "hostile");
    let store = db.store(InfluxOptions::default()).await;
    // (written, read back): line protocol cannot carry a line feed or end a tag value with
    // a backslash; the store changes those the documented way.
    let locations = [
        ("Server Room", "Server Room"),
        ("a,b=c d", "a,b=c d"),
        ("=", "="),
        (",", ","),
        (" ", " "),
        ("  two  spaces  ", "  two  spaces  "),
        ("quote\"s and 'single'", "quote\"s and 'single'"),
        ("back\\slash", "back\\slash"),
        ("\\,", "\\,"),
        ("\\ \\=", "\\ \\="),
        ("#hash", "#hash"),
        ("tab\there", "tab\there"),
        ("équipe ☃ 机房", "équipe ☃ 机房"),
        ("two\nlines", "two lines"),
        ("C:\\", "C:\\ "),
        ("a\\\\", "a\\\\ "),
    ];
    let readings: Vec<Reading> = locations
        .iter()
        .enumerate()
        .map(|(i, (location, _))| {
            reading(
                &format!("h{i:02}"),
                "hostile_test",
                Some(location),
                BASE + i as i64,
                &[("v", i as f64)],
            )
        })
        .collect();
    store.write(&readings).await.expect("write");
    let stored: BTreeMap<String, String> = db
        .rows("SELECT * FROM \"hostile_test\"")
        .into_iter()
        .map(|row| {
            (
                row["device_id"].as_str().expect("id").to_owned(),
                row["location"].as_str().expect("location").to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = locations
        .iter()
        .enumerate()
        .map(|(i, (_, read_back))| (format!("h{i:02}"), (*read_back).to_owned()))
        .collect();
    assert_eq!(stored, expected);

    // Ids (restricted by the model, escaped anyway) with every quoting hazard: each reads
    // its own points only, so a quote cannot widen the InfluxQL WHERE clause.
    let ids = [
        "victim",
        "x' OR device_id =~ /.*/ OR device_id = '",
        "back\\' OR 'a'='a",
        "a,b=c d",
        "new\nline",
    ];
    let readings: Vec<Reading> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| reading(id, "hostile_ids", None, BASE + i as i64, &[("v", i as f64)]))
        .collect();
    store.write(&readings).await.expect("write ids");
    for (i, id) in ids.iter().enumerate().filter(|(_, id)| !id.contains('\n')) {
        let points = store
            .history(&history(id, BASE, BASE + HOUR))
            .await
            .expect("history");
        assert_eq!(
            points.iter().map(|p| p.value).collect::<Vec<_>>(),
            [i as f64],
            "{id:?} reads exactly its own point"
        );
        assert_eq!(
            store.count(id, BASE, BASE + HOUR).await.expect("count"),
            1,
            "{id:?}"
        );
    }
    assert_eq!(db.rows("SELECT * FROM \"hostile_ids\"").len(), ids.len());
}

#[tokio::test]
async fn a_field_type_conflict_is_rejected_naming_the_point() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server, "conflict");
    let store = db.store(InfluxOptions::default()).await;
    // Another writer made `state` a string field of this measurement.
    let (status, body) = db.write_raw(&format!(
        "door_sensor,device_id=other state=\"open\" {BASE}\n"
    ));
    assert_eq!(status, 204, "{body}");

    let good = reading(
        "door-1",
        "door_sensor",
        None,
        BASE + 1_000,
        &[("battery", 90.0)],
    );
    let bad = reading(
        "door-2",
        "door_sensor",
        None,
        BASE + 2_000,
        &[("state", 1.0)],
    );
    let error = store
        .write(&[good, bad])
        .await
        .expect_err("a float into a string field must fail");
    // The point's content, not the configuration: the caller dead-letters that reading
    // and writes the rest.
    let BackendError::Content { detail, .. } = &error else {
        panic!("expected Content, got {error:?}");
    };
    assert!(!error.is_transient());
    assert!(error.is_content());
    assert!(
        detail.contains("field type conflict"),
        "InfluxDB's reason: {detail}"
    );
    assert!(
        detail.contains("device door-2 at 2026-05-28T20:00:02.000Z"),
        "names the point: {detail}"
    );
}

/// What InfluxDB refuses because of a point (a time outside its range) is `Content`; a
/// database that does not exist is `Rejected`: no point's fault, never dead-lettered.
#[tokio::test]
async fn a_time_outside_the_range_is_content_and_a_missing_database_is_not() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server, "range");
    let store = db.store(InfluxOptions::default()).await;
    // Year 1000: before 1677-09-21, the earliest instant InfluxDB stores.
    let ancient = reading("old-1", "t", None, -30_610_224_000_000, &[("v", 1.0)]);
    let error = store
        .write(&[ancient])
        .await
        .expect_err("year 1000 cannot be stored");
    assert!(error.is_content(), "{error:?}");
    assert!(
        error.to_string().contains("device old-1"),
        "names the point: {error}"
    );
    store
        .write(&[reading("new-1", "t", None, BASE, &[("v", 1.0)])])
        .await
        .expect("the store still writes a good point");

    let missing = TestDb::new(&server, "missing");
    let options = InfluxOptions {
        create_database: false,
        ..InfluxOptions::default()
    };
    let store = missing.store(options).await;
    let error = store
        .write(&[reading("d-1", "t", None, BASE, &[("v", 1.0)])])
        .await
        .expect_err("no such database");
    assert!(
        matches!(error, BackendError::Rejected { .. }),
        "a missing database is configuration, not content: {error:?}"
    );
}
