//! The one URL helper every backend, worker and the operator use for what they show of a
//! URL: [`mask`] hides every secret a URL can carry before it reaches a log line, an
//! error or a status.

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
    use super::mask;

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
}
