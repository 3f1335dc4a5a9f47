//! The one URL helper every backend, worker and the operator use for what they show of a
//! URL: [`mask`] hides every secret a URL can carry before it reaches a log line, an
//! error or a status; [`take_query_param`] takes out a parameter of ours that a client
//! library would not understand.

/// `url` fit for logs and errors: the password of `scheme://user:password@host`, a lone
/// user part (`redis://s3cret@cache`, which old clients send as the password) and any
/// `password=`/`token=` query value become `***`. A string without a scheme that holds an `@` is
/// not shown at all, so a mistyped secret is never echoed.
pub fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL at all: it may be a bare secret pasted in the wrong place.
        return if url.contains('@') {
            "*** (not a URL)".to_owned()
        } else {
            url.to_owned()
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{}", mask_query(tail))
}

/// Removes `name=value` from a URL's query, returning the URL without it and the value.
/// (`redis://h:6379?prefix=tenant-a:` puts every key under `tenant-a:`; the Redis client
/// itself does not know the parameter.)
pub fn take_query_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((key, v)) if key == name => {
                value = Some(v.to_owned());
                false
            }
            _ => !pair.is_empty(),
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, value)
}

/// The path-and-query part with secret-looking query values hidden.
fn mask_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

fn is_secret_key(key: &str) -> bool {
    ["password", "passwd", "token", "secret", "sasl_password"]
        .iter()
        .any(|secret| key.eq_ignore_ascii_case(secret))
}

#[cfg(test)]
mod tests {
    use super::{mask, take_query_param};

    #[test]
    fn hides_every_kind_of_url_secret() {
        assert_eq!(mask("redis://s3cret@cache"), "redis://***@cache");
        assert_eq!(mask("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(mask("mqtt://u:p%2Fq@h"), "mqtt://u:***@h");
        assert_eq!(
            mask("influx://h:8086?db=sensors&token=abc"),
            "influx://h:8086?db=sensors&token=***"
        );
        assert_eq!(
            mask("postgres://h/db?user=u&password=pw&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
    }

    #[test]
    fn the_cases_of_the_maskers_it_replaced() {
        // connect::mask's
        assert_eq!(
            mask("postgres://app:pw@db:5432/x?sslmode=disable"),
            "postgres://app:***@db:5432/x?sslmode=disable"
        );
        assert_eq!(mask("redis://h:6379"), "redis://h:6379");
        // A lone user part is hidden on every scheme (connect::mask showed it).
        assert_eq!(mask("kafka://u@h:9092"), "kafka://***@h:9092");
        assert_eq!(mask("no-scheme"), "no-scheme");
        // cache::redis::mask_url's
        assert_eq!(
            mask("redis://:s3cret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            mask("redis://app:s3cret@cache:6379"),
            "redis://app:***@cache:6379"
        );
        assert_eq!(mask("redis://cache:6379"), "redis://cache:6379");
        let unparsable = mask("redis://:s3cret@[::1");
        assert!(!unparsable.contains("s3cret"), "{unparsable}");
        assert!(unparsable.ends_with("***@[::1"), "{unparsable}");
        // postgres::mask_password's
        assert_eq!(
            mask("postgres://sf:hunter2@db:5432/sensorfleet"),
            "postgres://sf:***@db:5432/sensorfleet"
        );
        let query = mask("postgres://db/sensorfleet?user=sf&password=hunter2&sslmode=disable");
        assert!(!query.contains("hunter2"), "{query}");
        assert!(query.contains("sslmode=disable"), "{query}");
        // A lone user part is hidden on every scheme (mask_password showed it).
        assert_eq!(
            mask("postgres://sf@db/sensorfleet"),
            "postgres://***@db/sensorfleet"
        );
        assert!(!mask("postgres://sf:hunter2@[bad").contains("hunter2"));
    }

    #[test]
    fn leaves_urls_without_secrets_alone() {
        assert_eq!(mask("kafka://a:9092,b:9092"), "kafka://a:9092,b:9092");
        assert_eq!(mask("embedded"), "embedded");
        assert_eq!(mask("redis://cache:6379/0"), "redis://cache:6379/0");
    }

    #[test]
    fn a_user_and_password_with_an_at_sign_keep_nothing_of_the_password() {
        let shown = mask("postgres://u:p@ss@h/db");
        assert!(!shown.contains("p@ss"), "{shown}");
        assert!(shown.ends_with("@h/db"), "{shown}");
        assert_eq!(mask("user:pw@host"), "*** (not a URL)");
        assert_eq!(mask("localhost:1883"), "localhost:1883");
    }

    #[test]
    fn a_query_parameter_is_taken_out() {
        assert_eq!(
            take_query_param("redis://h:6379?prefix=t1:", "prefix"),
            ("redis://h:6379".to_owned(), Some("t1:".to_owned()))
        );
        assert_eq!(
            take_query_param("redis://h/2?a=1&prefix=x&b=2", "prefix"),
            ("redis://h/2?a=1&b=2".to_owned(), Some("x".to_owned()))
        );
        assert_eq!(
            take_query_param("redis://h", "prefix"),
            ("redis://h".to_owned(), None)
        );
    }
}
