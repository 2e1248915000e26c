//! The floor proxy's whole data path, shared by `--example floor-proxy` (its own process) and
//! `tests/floor_proxy.rs`: the accept loop and one task per connection, on the current thread's
//! `LocalSet`.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Header lines parsed at most in a head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Bytes of a head at most, request or answer.
const MAX_HEAD: usize = 16 * 1024;
/// Idle upstream connections kept at most.
const MAX_POOLED: usize = 256;
/// Lines a proxy never forwards (RFC 9110 §7.6.1), lower case.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

const NOT_IMPLEMENTED: &[u8] =
    b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

type Pool = Rc<RefCell<Vec<TcpStream>>>;

/// Serves `listener`, forwarding every request to `upstream`, until `lifetime` has passed. Runs
/// inside a `LocalSet` (the pool is the thread's own).
pub async fn serve(listener: TcpListener, upstream: SocketAddr, lifetime: Duration) {
    let pool: Pool = Rc::default();
    let deadline = tokio::time::sleep(lifetime);
    tokio::pin!(deadline);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors or a reset before accept: back off, keep serving.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut deadline => return,
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::task::spawn_local(async move {
            // A failed connection just ends; the floor keeps no error counts.
            let _ = connection(stream, peer.ip(), upstream, pool).await;
        });
    }
}

/// One downstream connection, request after request, until the client closes or an error.
async fn connection(
    mut client: TcpStream,
    peer: IpAddr,
    upstream: SocketAddr,
    pool: Pool,
) -> io::Result<()> {
    let mut input = Vec::with_capacity(4096);
    let mut output = Vec::with_capacity(4096);
    let mut answer = Vec::with_capacity(4096);
    // The line the proxy adds, and the head's end, made once per connection.
    let added = format!("x-forwarded-for: {peer}\r\n\r\n");
    loop {
        let Some((head_len, forwardable)) =
            read_request(&mut client, &mut input, added.as_bytes(), &mut output).await?
        else {
            return Ok(());
        };
        if !forwardable {
            client.write_all(NOT_IMPLEMENTED).await?;
            return Ok(());
        }
        input.drain(..head_len);
        let taken = pool.borrow_mut().pop();
        let mut server = match taken {
            Some(server) => server,
            None => {
                let server = TcpStream::connect(upstream).await?;
                server.set_nodelay(true)?;
                server
            }
        };
        server.write_all(&output).await?;
        answer.clear();
        let Some((head_len, body_len, reuse)) = read_answer(&mut server, &mut answer).await? else {
            client.write_all(BAD_GATEWAY).await?;
            return Ok(());
        };
        let whole = head_len + body_len;
        while answer.len() < whole {
            answer.reserve(whole - answer.len());
            if server.read_buf(&mut answer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        client.write_all(&answer[..whole]).await?;
        let mut pool = pool.borrow_mut();
        if reuse && answer.len() == whole && pool.len() < MAX_POOLED {
            pool.push(server);
        }
    }
}

/// Reads a request head into `input` and writes the upstream's head for it into `output`, from
/// the one parse. `None` when the client closed between requests; `Some((len, false))` when the
/// request has a body (the floor forwards none).
async fn read_request(
    client: &mut TcpStream,
    input: &mut Vec<u8>,
    added: &[u8],
    output: &mut Vec<u8>,
) -> io::Result<Option<(usize, bool)>> {
    loop {
        if !input.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(len) = request.parse(input).map_err(invalid)? {
                output.clear();
                return Ok(Some((len, rewrite(&request, added, output)?)));
            }
        }
        if !fill(client, input).await? {
            return Ok(None);
        }
    }
}

/// Reads an answer head into `answer`: its length, the body's length and whether the connection
/// may be reused. `None` when the upstream closed before a byte of it.
async fn read_answer(
    server: &mut TcpStream,
    answer: &mut Vec<u8>,
) -> io::Result<Option<(usize, usize, bool)>> {
    loop {
        if !answer.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = parsed.parse(answer).map_err(invalid)? {
                let (body, reuse) = answer_framing(&parsed)?;
                return Ok(Some((len, body, reuse)));
            }
        }
        if !fill(server, answer).await? {
            return Ok(None);
        }
    }
}

/// Reads more of a head; false when the peer closed before its first byte.
async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<bool> {
    if buffer.len() >= MAX_HEAD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
    }
    buffer.reserve(4096);
    match stream.read_buf(buffer).await? {
        0 if buffer.is_empty() => Ok(false),
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(true),
    }
}

fn invalid(error: httparse::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Writes the upstream's request head into `out`; false when the request has a body.
fn rewrite(request: &httparse::Request, added: &[u8], out: &mut Vec<u8>) -> io::Result<bool> {
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return Err(io::ErrorKind::InvalidData.into());
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") && header.value != b"0"
            || header.name.eq_ignore_ascii_case("transfer-encoding")
        {
            return Ok(false);
        }
        if HOP_BY_HOP
            .iter()
            .any(|name| header.name.eq_ignore_ascii_case(name))
        {
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(added);
    Ok(true)
}

/// The answer's body length (`Content-Length`; a status without a body reads 0) and whether its
/// connection may be reused. A chunked answer, or one delimited by the close, is an error.
fn answer_framing(answer: &httparse::Response) -> io::Result<(usize, bool)> {
    let code = answer.code.unwrap_or(0);
    let mut length = None;
    let mut reuse = answer.version == Some(1);
    for header in answer.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok();
            length = value.and_then(|v| v.trim().parse::<usize>().ok());
        } else if header.name.eq_ignore_ascii_case("connection") {
            reuse &= !header.value.eq_ignore_ascii_case(b"close");
        }
    }
    match length {
        _ if code == 204 || code == 304 || (100..200).contains(&code) => Ok((0, reuse)),
        Some(length) => Ok((length, reuse)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no content-length",
        )),
    }
}
