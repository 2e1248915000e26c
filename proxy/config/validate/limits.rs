//! The downstream limits: connections, head size and count, HTTP/2 settings and timeouts.

use super::fields::duration;
use super::Problems;
use crate::config::model::*;
use crate::config::raw::*;

pub(super) fn limits(p: &mut Problems, raw: Option<&RawLimits>) -> Limits {
    let mut limits = Limits::default();
    if let Some(l) = raw {
        if let Some(n) = l.max_connections {
            if n == 0 {
                p.add("limits.max_connections", "must be at least 1");
            }
            limits.max_connections = n.max(1);
        }
        if let Some(n) = l.max_request_header_bytes {
            if n < 8192 {
                p.add(
                    "limits.max_request_header_bytes",
                    format!("{n} is below the least hyper accepts (8192)"),
                );
            }
            limits.max_request_header_bytes = n.max(8192);
        }
        if let Some(n) = l.max_request_headers {
            if n == 0 {
                p.add("limits.max_request_headers", "must be at least 1");
            }
            limits.max_request_headers = n.max(1);
        }
        if let Some(n) = l.http2_max_concurrent_streams {
            limits.http2_max_concurrent_streams = n.max(1);
        }
        for (field, value, slot) in [
            (
                "http2_initial_stream_window",
                l.http2_initial_stream_window,
                &mut limits.http2_initial_stream_window,
            ),
            (
                "http2_initial_connection_window",
                l.http2_initial_connection_window,
                &mut limits.http2_initial_connection_window,
            ),
        ] {
            if let Some(n) = value {
                // RFC 9113 §6.9.2: windows from 65,535 to 2^31 - 1.
                if !(65_535..=0x7fff_ffff).contains(&n) {
                    p.add(
                        format!("limits.{field}"),
                        format!("{n} is outside 65535..2147483647 (RFC 9113)"),
                    );
                } else {
                    *slot = n;
                }
            }
        }
        if let Some(t) = &l.request_body_idle_timeout {
            limits.request_body_idle_timeout = duration(p, "limits.request_body_idle_timeout", t)
                .unwrap_or(limits.request_body_idle_timeout);
        }
        if let Some(t) = &l.http2_keepalive_interval {
            limits.http2_keepalive_interval = duration(p, "limits.http2_keepalive_interval", t)
                .unwrap_or(limits.http2_keepalive_interval);
        }
        if let Some(t) = &l.header_read_timeout {
            limits.header_read_timeout =
                duration(p, "limits.header_read_timeout", t).unwrap_or(limits.header_read_timeout);
        }
        if let Some(t) = &l.keep_alive_timeout {
            limits.keep_alive_timeout =
                duration(p, "limits.keep_alive_timeout", t).unwrap_or(limits.keep_alive_timeout);
        }
        if let Some(t) = &l.idle_release_after {
            limits.idle_release_after =
                duration(p, "limits.idle_release_after", t).unwrap_or(limits.idle_release_after);
        }
    }

    limits
}
