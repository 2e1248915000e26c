//! Rule conditions and cohort keys read from a request head, without allocating: cookies and
//! query parameters are scanned in place.

use http::HeaderMap;

use super::RequestHead;
use crate::config::{CohortKey, Condition};

/// True when the request carries exactly the value the condition names.
pub fn matches(condition: &Condition, head: &RequestHead<'_>) -> bool {
    match condition {
        Condition::Header { name, value } => head
            .headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes()),
        Condition::Cookie { name, value } => {
            cookie(head.headers, name).is_some_and(|v| v == value.as_bytes())
        }
        Condition::Query { name, value } => head.query.is_some_and(|q| {
            q.split('&').any(|pair| match pair.split_once('=') {
                Some((n, v)) => n == name && v == value,
                None => pair == name && value.is_empty(),
            })
        }),
    }
}

/// The user key of a cohort, when the request carries a non-empty one.
pub fn cohort_key<'h>(key: &CohortKey, headers: &'h HeaderMap) -> Option<&'h [u8]> {
    let value = match key {
        CohortKey::Header(name) => headers.get(name).map(|v| v.as_bytes()),
        CohortKey::Cookie(name) => cookie(headers, name),
    };
    value.filter(|v| !v.is_empty())
}

/// The value of cookie `name` in any `Cookie` header (RFC 6265 `name=value; name2=value2`).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|h| h.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}
