//! Comparison of a live and a shadow (or secondary) answer: status, headers and body, the body
//! structurally when both are JSON, with differences named by RFC 6901 pointers.
//!
//! Pure functions over complete answers: the mirror workers call them off the data path.

use http::HeaderMap;
use serde_json::Value;

pub use crate::data::tap::Answer;

/// One difference between two answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    /// `status`, `header:NAME`, `body`, or a JSON pointer such as `/items/0/price`.
    pub path: String,
    /// The value in the first answer (live), shortened.
    pub left: String,
    /// The value in the second answer (shadow or secondary), shortened.
    pub right: String,
}

/// What to leave out of a comparison.
#[derive(Debug, Clone, Default)]
pub struct Ignore<'a> {
    /// Header names, lowercase.
    pub headers: &'a [String],
    /// JSON pointers; a pointer also covers everything below it.
    pub json_paths: &'a [String],
}

/// Differences reported per comparison at most.
pub const MAX_DIFFS: usize = 64;
const MAX_VALUE_CHARS: usize = 120;

fn short(text: &str) -> String {
    if text.chars().count() <= MAX_VALUE_CHARS {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX_VALUE_CHARS).collect();
        s.push('…');
        s
    }
}

/// Every difference between `left` and `right`, minus what `ignore` leaves out.
pub fn diff(left: &Answer, right: &Answer, ignore: &Ignore<'_>) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    if left.status != right.status {
        out.push(FieldDiff {
            path: "status".into(),
            left: left.status.to_string(),
            right: right.status.to_string(),
        });
    }
    let mut names: Vec<&http::HeaderName> =
        left.headers.keys().chain(right.headers.keys()).collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    for name in names {
        if ignore.headers.iter().any(|h| h == name.as_str()) {
            continue;
        }
        let values = |h: &HeaderMap| {
            h.get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (l, r) = (values(&left.headers), values(&right.headers));
        if l != r {
            out.push(FieldDiff {
                path: format!("header:{name}"),
                left: short(&l),
                right: short(&r),
            });
        }
    }
    let parsed = (
        serde_json::from_slice::<Value>(&left.body),
        serde_json::from_slice::<Value>(&right.body),
    );
    match parsed {
        (Ok(l), Ok(r)) if !left.truncated && !right.truncated => {
            json_diff(&l, &r, &mut String::new(), ignore.json_paths, &mut out)
        }
        _ if left.body != right.body => out.push(FieldDiff {
            path: "body".into(),
            left: short(&String::from_utf8_lossy(&left.body)),
            right: short(&String::from_utf8_lossy(&right.body)),
        }),
        _ => {}
    }
    out.truncate(MAX_DIFFS);
    out
}

fn ignored(path: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|p| {
        path == p || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
    })
}

/// RFC 6901: `~` is `~0` and `/` is `~1` inside a reference token.
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

/// Compares one member or element, present on either side or both.
fn child(
    token: &str,
    x: Option<&Value>,
    y: Option<&Value>,
    path: &mut String,
    ignore: &[String],
    out: &mut Vec<FieldDiff>,
) {
    let len = path.len();
    push_token(path, token);
    match (x, y) {
        (Some(x), Some(y)) => json_diff(x, y, path, ignore, out),
        (x, y) if !ignored(path, ignore) => out.push(FieldDiff {
            path: path.clone(),
            left: x.map_or("(absent)".into(), |v| short(&v.to_string())),
            right: y.map_or("(absent)".into(), |v| short(&v.to_string())),
        }),
        _ => {}
    }
    path.truncate(len);
}

fn json_diff(l: &Value, r: &Value, path: &mut String, ignore: &[String], out: &mut Vec<FieldDiff>) {
    if out.len() >= MAX_DIFFS || ignored(path, ignore) {
        return;
    }
    match (l, r) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                child(k, a.get(k), b.get(k), path, ignore, out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                child(&i.to_string(), a.get(i), b.get(i), path, ignore, out);
            }
        }
        (a, b) if a != b => out.push(FieldDiff {
            path: if path.is_empty() {
                "".into()
            } else {
                path.clone()
            },
            left: short(&a.to_string()),
            right: short(&b.to_string()),
        }),
        _ => {}
    }
}

/// A request path with identifiers collapsed, so `/users/42` and `/users/7` aggregate together:
/// all-digit segments become `{n}`, UUIDs `{uuid}`, long hex strings `{hex}`.
pub fn normalize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        out.push('/');
        let is_uuid = segment.len() == 36
            && segment.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str("{n}");
        } else if is_uuid {
            out.push_str("{uuid}");
        } else if segment.len() >= 16 && segment.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str("{hex}");
        } else {
            out.push_str(segment);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(status: u16, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("date", "now".parse().unwrap());
        Answer {
            status,
            headers,
            body: Bytes::from(body.to_string()),
            truncated: false,
        }
    }

    #[test]
    fn json_differences_are_reported_at_their_pointer() {
        let live = answer(
            200,
            r#"{"user": {"name": "ann", "tags": ["a", "b"]}, "took": 3, "a/b": 1}"#,
        );
        let shadow = answer(
            200,
            r#"{"user": {"name": "Ann", "tags": ["a"]}, "took": 5, "a/b": 2}"#,
        );
        let ignore = Ignore {
            headers: &["date".to_string()],
            json_paths: &["/took".to_string()],
        };
        let paths: Vec<String> = diff(&live, &shadow, &ignore)
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(paths, ["/a~1b", "/user/name", "/user/tags/1"]);
    }

    #[test]
    fn status_headers_and_plain_bodies_are_compared() {
        let mut live = answer(200, "hello");
        let mut shadow = answer(500, "hello!");
        live.headers.insert("x-a", "1".parse().unwrap());
        shadow.headers.insert("x-a", "2".parse().unwrap());
        let d = diff(
            &live,
            &shadow,
            &Ignore {
                headers: &["date".into()],
                json_paths: &[],
            },
        );
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["status", "header:x-a", "body"]);
        assert!(diff(&live, &live, &Ignore::default()).is_empty());
    }

    #[test]
    fn identifiers_collapse_in_paths() {
        assert_eq!(
            normalize_path("/users/42/orders/7"),
            "/users/{n}/orders/{n}"
        );
        assert_eq!(
            normalize_path("/c/3f1c2a9e-77b1-4c55-9a34-0d8f6f4e2b10"),
            "/c/{uuid}"
        );
        assert_eq!(normalize_path("/blob/0123456789abcdef0123"), "/blob/{hex}");
        assert_eq!(normalize_path("/"), "/");
    }
}
