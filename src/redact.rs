//! Credentials out of printed text: a URL's `user:password@` (a Pushgateway behind basic auth, a
//! `postgresql://` DSN) and a conninfo's `password=…` must not reach logs, errors or reports,
//! which are read by more people than the secret is meant for.

/// `text` with the password of every `scheme://user:password@host` URL and of every
/// `password=…` conninfo keyword replaced by `***`.
pub fn credentials(text: &str) -> String {
    conninfo_passwords(&url_passwords(text))
}

fn url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or space; userinfo ends at its last '@'.
        let end = tail.find(['/', '?', '#', ' ', '\n', '\t', '"', '\'']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn conninfo_passwords(text: &str) -> String {
    const KEY: &str = "password=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let (head, tail) = rest.split_at(at + KEY.len());
        out.push_str(head);
        out.push_str("***");
        // A quoted value runs to the closing quote (with \' escapes); a bare one to whitespace or '&'.
        let end = if let Some(quoted) = tail.strip_prefix('\'') {
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map_or(tail.len(), |(i, _)| i + 2)
        } else {
            tail.find(|c: char| c.is_whitespace() || c == '&').unwrap_or(tail.len())
        };
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::credentials;

    #[test]
    fn passwords_in_urls_and_conninfo_are_hidden() {
        let cases = [
            (
                "cannot push to http://ops:s3cret@gw:9091/metrics: refused",
                "cannot push to http://ops:***@gw:9091/metrics: refused",
            ),
            ("postgresql://app:p%40ss@db/app?sslmode=require", "postgresql://app:***@db/app?sslmode=require"),
            ("http://user@host/x and https://a:b@c", "http://user@host/x and https://a:***@c"),
            ("host=db password=hunter2 user=app", "host=db password=*** user=app"),
            ("host=db password='a \\' b' user=app", "host=db password=*** user=app"),
            ("?user=app&password=x&sslmode=require", "?user=app&password=***&sslmode=require"),
            ("no secrets at s3://bucket/prefix here", "no secrets at s3://bucket/prefix here"),
        ];
        for (text, want) in cases {
            assert_eq!(credentials(text), want, "{text}");
        }
    }
}
