//! The syntax of a request's authority: the `Host` header, the authority of an absolute-form
//! target and HTTP/2's `:authority` (RFC 9110 §§4.2, 7.2; RFC 3986 §3.2).
//!
//! `host [ ":" port ]`, where host is a reg-name (unreserved characters and sub-delimiters), an
//! IPv4 address (a reg-name by syntax) or a bracketed IPv6 literal, and port is 1 to 5 digits up
//! to 65535. Percent-encodings, which RFC 3986 allows in a reg-name, are refused: no DNS name
//! needs one (IDNs travel as punycode) and the `http` crate refuses them in a target's authority,
//! so a Host header and an absolute-form target are held to the same syntax. Anything else (a `/`, an `@` of user information, whitespace, an
//! empty host or port) is refused: routing and the upstream's own virtual hosting read this value,
//! and a proxy that passes on what they would parse differently lets a client choose either.
//! Pure: bytes in, a verdict out; fuzzed by `fuzz/fuzz_targets/host_syntax.rs`.

/// Why an authority is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// Nothing at all, or a port with no host.
    #[error("empty host")]
    Empty,
    /// `user@host`: user information is not part of a request's authority.
    #[error("user information in the authority")]
    UserInfo,
    /// A character a host name cannot hold, or an invalid IP literal.
    #[error("invalid host name")]
    Host,
    /// An empty, non-numeric or out-of-range port.
    #[error("invalid port")]
    Port,
}

/// The bytes of a `reg-name` (RFC 3986 §3.2.2) without percent-encoding: unreserved and
/// sub-delims. A table, since every byte of every `Host` is looked up here.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

fn is_reg_name_byte(b: u8) -> bool {
    REG_NAME[usize::from(b)]
}

fn check_reg_name(host: &[u8]) -> Result<(), AuthorityError> {
    if host.is_empty() {
        return Err(AuthorityError::Empty);
    }
    match host.iter().find(|b| !is_reg_name_byte(**b)) {
        None => Ok(()),
        Some(b'@') => Err(AuthorityError::UserInfo),
        Some(_) => Err(AuthorityError::Host),
    }
}

fn check_port(port: &[u8]) -> Result<(), AuthorityError> {
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return Err(AuthorityError::Port);
    }
    let value: u32 = port.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
    if value > u32::from(u16::MAX) {
        return Err(AuthorityError::Port);
    }
    Ok(())
}

/// Checks `host [ ":" port ]`.
pub fn check(authority: &[u8]) -> Result<(), AuthorityError> {
    if authority.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if authority.contains(&b'@') {
        return Err(AuthorityError::UserInfo);
    }
    let rest = if let Some(literal) = authority.strip_prefix(b"[") {
        let close = literal
            .iter()
            .position(|b| *b == b']')
            .ok_or(AuthorityError::Host)?;
        let address = std::str::from_utf8(&literal[..close]).map_err(|_| AuthorityError::Host)?;
        // IPvFuture and zone identifiers are refused: no client needs them in a Host.
        address
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| AuthorityError::Host)?;
        &literal[close + 1..]
    } else {
        let end = authority
            .iter()
            .position(|b| *b == b':')
            .unwrap_or(authority.len());
        check_reg_name(&authority[..end])?;
        &authority[end..]
    };
    match rest {
        [] => Ok(()),
        [b':', port @ ..] => check_port(port),
        _ => Err(AuthorityError::Host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_exactly_unreserved_and_sub_delims() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
            assert_eq!(is_reg_name_byte(b), expected, "byte {b}");
        }
    }

    #[test]
    fn host_names_addresses_and_ports_are_accepted() {
        for ok in [
            "shop.example.com",
            "shop.example.com:8080",
            "SHOP.Example.COM.",
            "127.0.0.1",
            "127.0.0.1:0",
            "[::1]",
            "[2001:db8::7]:443",
            "xn--bcher-kva.example",
            "a_b~c",
            "a:65535",
            "a!$&'()*+,;=b",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
            // What is accepted here also parses as an absolute-form target's authority.
            assert!(http::uri::Authority::try_from(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn what_is_not_an_authority_is_refused_with_its_reason() {
        use AuthorityError as E;
        for (bad, why) in [
            ("", E::Empty),
            (":80", E::Empty),
            ("a/b", E::Host),
            ("u@a", E::UserInfo),
            ("a b", E::Host),
            (" a", E::Host),
            ("a\t", E::Host),
            ("a\\b", E::Host),
            ("a\"b", E::Host),
            ("caf%C3%A9.example", E::Host),
            ("a%zz", E::Host),
            ("a%4", E::Host),
            ("a?b", E::Host),
            ("a#b", E::Host),
            ("a:", E::Port),
            ("a:xx", E::Port),
            ("a:+80", E::Port),
            ("a:65536", E::Port),
            ("a:123456", E::Port),
            ("a:80:80", E::Port),
            ("[zz]:80", E::Host),
            ("[::1", E::Host),
            ("[::1]x", E::Host),
            ("[fe80::1%25eth0]", E::Host),
            ("[v1.x]", E::Host),
            ("é.example", E::Host),
        ] {
            assert_eq!(check(bad.as_bytes()), Err(why), "{bad:?}");
        }
    }
}
