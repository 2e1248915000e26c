//! The connection's phases and deadlines, and the guarded reader, without a network.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(75),
        ..Limits::default()
    }
}

#[tokio::test]
async fn the_first_head_counts_from_accept_and_later_ones_from_their_first_byte() {
    let conn = Conn::new(&limits());
    let mut index = 0;
    assert_eq!(
        conn.deadline(),
        Some((conn.accepted + Duration::from_secs(10), Expiry::HeaderRead))
    );
    // A first byte does not restart the clock of the first head.
    conn.on_event(Event::Started, &mut index, &mut None);
    assert_eq!(
        conn.deadline(),
        Some((conn.accepted + Duration::from_secs(10), Expiry::HeaderRead))
    );
    conn.on_event(Event::Head, &mut index, &mut None);
    assert_eq!(conn.deadline(), None, "a body is being read");
    let (request, in_flight) = conn.begin();
    conn.on_event(Event::Ended, &mut index, &mut None);
    assert_eq!(conn.deadline(), None, "a request is in flight");
    drop(in_flight);
    assert_eq!(conn.deadline().map(|d| d.1), Some(Expiry::KeepAlive));
    conn.on_event(Event::Started, &mut index, &mut None);
    assert_eq!(conn.deadline().map(|d| d.1), Some(Expiry::HeaderRead));
    assert_eq!((request.index, index), (0, 1));
}

#[tokio::test]
async fn an_http2_connection_is_idle_between_streams() {
    let conn = Conn::new(&limits());
    let mut index = 0;
    for e in [Event::Started, Event::Preface, Event::Opaque] {
        conn.on_event(e, &mut index, &mut None);
    }
    assert_eq!(conn.deadline().map(|d| d.1), Some(Expiry::KeepAlive));
    let (_, a) = conn.begin();
    let (_, b) = conn.begin();
    drop(a);
    assert_eq!(conn.deadline(), None, "one stream is still open");
    drop(b);
    assert_eq!(conn.deadline().map(|d| d.1), Some(Expiry::KeepAlive));
}

#[tokio::test]
async fn declared_chunk_sizes_and_framing_errors_belong_to_their_request() {
    let (mut client, server) = tokio::io::duplex(4096);
    let conn = Conn::new(&limits());
    let mut guarded = Guarded::new(server, conn.clone(), &limits());
    let (first, _f) = conn.begin();
    let (second, _s) = conn.begin();
    client
        .write_all(
            b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n\
              POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc",
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let error = loop {
        match guarded.read(&mut buf).await {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(
        got.ends_with(b"\r\n\r\n3 "),
        "everything before the bad byte was read: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(first.framing_error(), None);
    assert_eq!(second.framing_error(), Some(FramingError::ChunkSize));
    assert_eq!(second.declared(), Some(0));
    assert_eq!(
        first.declared(),
        None,
        "the scanner has left the first body"
    );
    // The error is sticky; writes still work (the 400 goes out).
    assert!(guarded.read(&mut buf).await.is_err());
    guarded
        .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 400");
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_idle_only_between_requests_with_nothing_left_to_write() {
    let conn = Conn::new(&limits());
    let mut index = 0;
    assert_eq!(conn.idle_since(), None, "before the first request");
    conn.on_event(Event::Started, &mut index, &mut None);
    conn.on_event(Event::Head, &mut index, &mut None);
    let (_, in_flight) = conn.begin();
    assert_eq!(conn.requests_begun(), 1);
    conn.on_event(Event::Ended, &mut index, &mut None);
    assert_eq!(conn.idle_since(), None, "its response is being served");
    tokio::time::advance(Duration::from_millis(250)).await;
    drop(in_flight);
    let since = conn.idle_since().expect("idle once the response is done");
    assert_eq!(since, conn.accepted + Duration::from_millis(250));
    conn.wrote(true);
    assert_eq!(
        conn.idle_since(),
        None,
        "the response's last bytes are still leaving"
    );
    conn.wrote(false);
    assert_eq!(conn.idle_since(), Some(since));
    conn.on_event(Event::Started, &mut index, &mut None);
    assert_eq!(conn.idle_since(), None, "a next head has begun");
}
