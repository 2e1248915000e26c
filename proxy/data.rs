//! The data path: everything a request touches between the downstream connection and the
//! upstream's answer.
//!
//! `server` accepts (TLS, HTTP/1.1, h2, h2c) and hands each request to `handler` (an HTTP/1.1
//! request without a body, or whose body came whole with its head, through `fast`, the
//! connection's own loop; any other through hyper's server), which loads the
//! `snapshot` once, reads the head's lines once (`present`), asks `route::decide` (pure), forwards
//! through `upstream` with the rewritten `headers`, the lines `forwarding` adds and the wrapped
//! `body`, and answers failures through `error`'s one status mapping. The
//! per-request `record` counts the outcome when the response body ends, blamed on the side that
//! failed (`fault`). What clients send is checked on the way in: `conn` reads each connection
//! through the `framing` scanner and enforces its timeouts (an idle HTTP/1.1 one rests in its
//! listener's `hall`, outside any task, until its client sends again), `strict` and
//! `authority` check the request head before routing. Copies for a dark launch leave through
//! `tap` (a `try_send` into a bounded queue the shadow module drains). Nothing here imports the
//! control plane: it writes the snapshot, this module only reads it.

pub mod authority;
pub mod body;
pub mod conn;
pub mod endpoint;
pub mod error;
pub mod fast;
pub mod fault;
pub mod forwarding;
pub mod framing;
pub mod hall;
pub mod handler;
pub mod headers;
pub mod http1;
pub mod present;
pub mod ratelimit;
pub mod record;
pub mod server;
pub mod shared;
pub mod slice;
pub mod snapshot;
pub mod strict;
pub mod tap;
pub mod tls;
pub mod upstream;
pub mod workers;
