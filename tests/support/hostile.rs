//! The hostile corpus of issue 9: what a broken or malicious device may publish, each
//! case on a topic of its own, with what the platform must do with it. The fault tests
//! send it through the real stack and through `up`, then check that every case had its
//! outcome and that nothing else changed.

/// What the platform does with a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Dead-lettered with this reason (the label of `sensorfleet_bridge_rejects_total`).
    Rejected(&'static str),
    /// Valid, odd as it looks: stored and served like any reading.
    Stored,
}

/// One hostile message.
pub struct Case {
    /// What it tries.
    pub name: &'static str,
    /// The topic's device id: the dead letter's key.
    pub device_id: String,
    /// `sensors/{type}/{id}`.
    pub topic: String,
    /// The raw payload.
    pub payload: Vec<u8>,
    /// What must happen.
    pub outcome: Outcome,
}

/// The corpus for a run: device ids start with `run` so runs never meet. `known` is a
/// device the fleet declares as a `temperature_sensor` (for the type-confusion case).
pub fn corpus(run: &str, known: &str) -> Vec<Case> {
    let id = |n: usize| format!("{run}-h{n:02}");
    let mut cases = Vec::new();
    let mut add = |name, device_id: String, device_type: &str, payload: Vec<u8>, outcome| {
        cases.push(Case {
            name,
            topic: format!("sensors/{device_type}/{device_id}"),
            device_id,
            payload,
            outcome,
        });
    };
    let t = "temperature_sensor";
    let json = |id: &str, rest: &str| format!(r#"{{"device_id":"{id}",{rest}}}"#).into_bytes();
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let fields = |n: usize| -> String {
        (0..n)
            .map(|i| format!(r#""{:f<64}":{i}"#, format!("f{i:02}_")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let long_id = format!("{run}-{}", "l".repeat(128 - run.len() - 1));
    let too_long_id = format!("{long_id}x");

    add(
        "malformed JSON",
        id(1),
        t,
        format!(r#"{{"device_id":"{}","#, id(1)).into_bytes(),
        Outcome::Rejected("not_json"),
    );
    add(
        "not an object",
        id(2),
        t,
        b"[1,2,3]".to_vec(),
        Outcome::Rejected("not_json"),
    );
    add(
        "a number beyond f64",
        id(3),
        t,
        json(&id(3), r#""temperature_celsius":1e999"#),
        Outcome::Rejected("non_finite"),
    );
    add(
        "NaN",
        id(4),
        t,
        json(&id(4), r#""temperature_celsius":NaN"#),
        Outcome::Rejected("non_finite"),
    );
    add(
        "-Infinity",
        id(5),
        t,
        json(&id(5), r#""temperature_celsius":-Infinity"#),
        Outcome::Rejected("non_finite"),
    );
    add(
        "nesting 200 deep",
        id(6),
        t,
        json(&id(6), &format!(r#""temperature_celsius":1,"x":{deep}"#)),
        Outcome::Rejected("not_json"),
    );
    let mut invalid_utf8 = json(&id(7), r#""temperature_celsius":1,"location":"AB""#);
    let at = invalid_utf8.len() - 4; // the `AB` before `"}`
    invalid_utf8.splice(at..at + 2, [0xff, 0xfe]);
    add(
        "invalid UTF-8",
        id(7),
        t,
        invalid_utf8,
        Outcome::Rejected("not_json"),
    );
    add(
        "65 fields",
        id(8),
        t,
        json(&id(8), &fields(65)),
        Outcome::Rejected("bad_fields"),
    );
    add(
        "a 65-byte field name",
        id(9),
        t,
        json(&id(9), &format!(r#""{}":1"#, "n".repeat(65))),
        Outcome::Rejected("bad_fields"),
    );
    add(
        "the number as a string",
        id(10),
        t,
        json(&id(10), r#""temperature_celsius":"22.5""#),
        Outcome::Rejected("bad_fields"),
    );
    add(
        "the id as a number",
        id(11),
        t,
        br#"{"device_id":11,"temperature_celsius":1}"#.to_vec(),
        Outcome::Rejected("bad_device_id"),
    );
    add(
        "a boolean timestamp",
        id(12),
        t,
        json(&id(12), r#""timestamp":true,"temperature_celsius":1"#),
        Outcome::Rejected("bad_timestamp"),
    );
    add(
        "an object location",
        id(13),
        t,
        json(&id(13), r#""location":{"a":1},"temperature_celsius":1"#),
        Outcome::Rejected("bad_fields"),
    );
    add(
        "epoch 0",
        id(14),
        t,
        json(&id(14), r#""timestamp":0,"temperature_celsius":1"#),
        Outcome::Rejected("too_old"),
    );
    add(
        "year 9999",
        id(15),
        t,
        json(
            &id(15),
            r#""timestamp":"9999-12-31T23:59:59Z","temperature_celsius":1"#,
        ),
        Outcome::Rejected("future_timestamp"),
    );
    add(
        "a 129-character id",
        too_long_id.clone(),
        t,
        json(&too_long_id, r#""temperature_celsius":1"#),
        Outcome::Rejected("bad_device_id"),
    );
    add(
        "another device's id in the payload",
        id(16),
        t,
        json(known, r#""temperature_celsius":99"#),
        Outcome::Rejected("topic_mismatch"),
    );
    add(
        "a declared device under another type",
        known.to_owned(),
        "humidity_sensor",
        json(known, r#""humidity_percent":50"#),
        Outcome::Rejected("type_mismatch"),
    );
    add(
        "64 fields of 64-byte names",
        id(17),
        t,
        json(&id(17), &fields(64)),
        Outcome::Stored,
    );
    add(
        "a 128-character id",
        long_id.clone(),
        t,
        json(&long_id, r#""temperature_celsius":1"#),
        Outcome::Stored,
    );
    add(
        "huge but finite numbers",
        id(18),
        t,
        json(
            &id(18),
            r#""temperature_celsius":1.7976931348623157e308,"low":-1.7976931348623157e308,"tiny":5e-324"#,
        ),
        Outcome::Stored,
    );
    cases
}

/// How many cases have each rejection reason.
pub fn expected_rejects(cases: &[Case]) -> std::collections::BTreeMap<&'static str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for case in cases {
        if let Outcome::Rejected(reason) = case.outcome {
            *counts.entry(reason).or_default() += 1;
        }
    }
    counts
}
