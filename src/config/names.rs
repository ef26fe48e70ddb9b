//! Two text rules every layer shares: what a region, pool or queue name may be
//! ([`valid_name`]), and how a database URL is shown without its password ([`redact_url`]).

/// Whether `s` is a valid region, pool or queue name: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `url` with the password (in the user-info part or a `password=` query parameter)
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    // User info ends at the last '@' (a password may itself contain an unescaped '@').
    let main = match main.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => main.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{main}?{q}"),
        None => format!("{scheme}://{main}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_cases() {
        let cases = [
            ("postgres://u:pw@h:5432/d", "postgres://u:***@h:5432/d"),
            ("postgres://u:p@ss@h/d", "postgres://u:***@h/d"),
            ("postgres://u@h/d", "postgres://u@h/d"),
            (
                "postgres://h/d?user=u&password=pw&sslmode=off",
                "postgres://h/d?user=u&password=***&sslmode=off",
            ),
            ("postgresql://h", "postgresql://h"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn valid_name_cases() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        let cases = [
            ("us-east", true),
            ("gpu_tasks", true),
            ("A9", true),
            (long.as_str(), true),
            ("", false),
            (too_long.as_str(), false),
            ("us east", false),
            ("q.1", false),
            ("é", false),
        ];
        for (name, want) in cases {
            assert_eq!(valid_name(name), want, "{name:?}");
        }
    }
}
