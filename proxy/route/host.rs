//! Host matching: exact names and `*.suffix` wildcards, case-insensitive, port ignored.

use crate::config::HostPattern;

/// The host without its port and trailing dot: `Shop.example.com.:8080` -> `Shop.example.com`.
pub fn strip_port(host: &str) -> &str {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: "[::1]:8080" -> "::1".
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// True when `host` (as sent, maybe with a port) matches one of the patterns.
pub fn matches_any(patterns: &[HostPattern], host: &str) -> bool {
    let name = strip_port(host);
    patterns.iter().any(|p| match p {
        HostPattern::Exact(exact) => name.eq_ignore_ascii_case(exact),
        HostPattern::Suffix(suffix) => {
            name.len() > suffix.len()
                && name.is_char_boundary(name.len() - suffix.len())
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_brackets_are_stripped() {
        assert_eq!(strip_port("a.example.com:8080"), "a.example.com");
        assert_eq!(strip_port("a.example.com."), "a.example.com");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("localhost"), "localhost");
    }

    #[test]
    fn exact_and_wildcard_match_case_insensitively() {
        let p = [
            HostPattern::Exact("shop.example.com".into()),
            HostPattern::Suffix(".shop.example.com".into()),
        ];
        assert!(matches_any(&p, "SHOP.example.com:443"));
        assert!(matches_any(&p, "eu.Shop.Example.com"));
        assert!(!matches_any(&p, "xshop.example.com"));
        assert!(!matches_any(&p, "example.com"));
        assert!(!matches_any(&[HostPattern::Suffix(".b.c".into())], "b.c"));
    }
}
