//! Kubernetes-style durations in manifests and flags: `500ms`, `30s`, `5m`, `1h30m`, `2d`.

/// The pattern of a duration field, the language of [`parse_duration_ms`]: `500ms`,
/// `30s`, `5m`, `1h30m`, `2d` or `0`. The API server checks it, `up` and the operator
/// check it again with a message naming the field.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(ms|s|m|h|d))+)$";

/// Parses a duration into milliseconds.
///
/// A sequence of `<integer><unit>` parts with units `ms`, `s`, `m`, `h`, `d`; `0` alone is
/// also accepted. The error says what was expected, to be shown next to the field name.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    let expected = || format!("{text:?} is not a duration like 500ms, 30s, 5m, 1h30m or 2d");
    if text.is_empty() {
        return Err(expected());
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(expected());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(expected()),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(factor)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    }
    Ok(total)
}

/// Formats milliseconds the way [`parse_duration_ms`] reads them, largest units first.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "5",
            "m",
            "5 m",
            "-5s",
            "1.5s",
            "5x",
            "99999999999999999999d",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [1, 999, 1_000, 61_000, 5_400_000, 90_061_001] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }
    }
}
