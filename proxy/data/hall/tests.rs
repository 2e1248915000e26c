//! The hall with real loopback sockets: a resting connection comes back with its bytes when its
//! client writes, is closed at its keep-alive deadline (paused time), by a drain, or when its
//! client closes, and holds its connection-limit permits until then.

use super::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

const BOUND: Duration = Duration::from_secs(5);

/// A connected pair: the client's stream, and the server's side as a non-blocking std socket.
async fn pair() -> (tokio::net::TcpStream, std::net::TcpStream, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    (client, server.into_std().unwrap(), peer)
}

/// A hall running with a 60 s keep-alive (or `keep_alive`): its door, its gauge, the drain
/// sender, the connections it wakes, and its task.
struct Running {
    door: Door,
    parked: IntGauge,
    drain: watch::Sender<()>,
    woken: mpsc::UnboundedReceiver<Resting>,
    task: tokio::task::JoinHandle<()>,
}

fn start(keep_alive: Duration) -> Running {
    let parked = IntGauge::new("parked", "connections resting").unwrap();
    let (door, hall) = open(keep_alive, Some(parked.clone())).unwrap();
    let (drain, drain_rx) = watch::channel(());
    let (tx, woken) = mpsc::unbounded_channel();
    let task = tokio::spawn(hall.run(drain_rx, move |resting| {
        let _ = tx.send(resting);
    }));
    Running {
        door,
        parked,
        drain,
        woken,
        task,
    }
}

/// Enters the server's side of a fresh pair holding one permit of `limit`; returns the client.
async fn enter(door: &Door, limit: &Arc<Semaphore>) -> (tokio::net::TcpStream, SocketAddr) {
    let (client, stream, peer) = pair().await;
    door.enter(Resting {
        stream: Socket::Plain(stream),
        peer,
        permits: vec![limit.clone().acquire_owned().await.unwrap()],
        idle_since: Instant::now(),
    });
    (client, peer)
}

/// Waits (bounded) until the gauge reads `n`.
async fn resting(hall: &Running, n: i64) -> bool {
    for _ in 0..500 {
        if hall.parked.get() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The server side of a woken connection reads the request its client sent while it rested, every
/// byte of it (none read by the hall; over TLS, decrypted by the same session), and answers it.
async fn serves_its_request(
    server: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    client: &mut (impl tokio::io::AsyncRead + Unpin),
) {
    let mut got = vec![0u8; 22];
    tokio::time::timeout(BOUND, server.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"GET /next HTTP/1.1\r\n\r\n");
    server.write_all(b"answer").await.unwrap();
    server.flush().await.unwrap();
    let mut answer = [0u8; 6];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"answer");
}

/// Asserts that a connection resting since `started` was closed at its keep-alive deadline: not
/// before it, and within a second after (paused time).
fn closed_at_deadline(started: Instant, keep_alive: Duration) {
    let waited = started.elapsed();
    assert!(
        waited >= keep_alive && waited < keep_alive + Duration::from_secs(1),
        "closed after {waited:?}"
    );
}

/// True when the client reads the end of the stream (or a reset) within the bound.
async fn closed(client: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(BOUND, client.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_resting_connection_comes_back_with_its_bytes_when_its_client_writes() {
    let mut hall = start(Duration::from_secs(60));
    let limit = Arc::new(Semaphore::new(1));
    let (mut client, peer) = enter(&hall.door, &limit).await;
    assert!(resting(&hall, 1).await, "the connection rests in the hall");
    assert_eq!(limit.available_permits(), 0, "it keeps its permit there");

    client
        .write_all(b"GET /next HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let woken = tokio::time::timeout(BOUND, hall.woken.recv())
        .await
        .expect("woken within the bound")
        .expect("the hall runs");
    assert_eq!(woken.peer, peer);
    assert_eq!(hall.parked.get(), 0, "no longer counted in the hall");
    assert_eq!(limit.available_permits(), 0, "the permit travels with it");

    let Socket::Plain(stream) = woken.stream else {
        panic!("a cleartext connection comes back as it went in");
    };
    let mut server = tokio::net::TcpStream::from_std(stream).unwrap();
    serves_its_request(&mut server, &mut client).await;
    drop(woken.permits);
    assert_eq!(limit.available_permits(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_keep_alive_timeout_closes_a_resting_connection_at_its_deadline() {
    let keep_alive = Duration::from_secs(30);
    let mut hall = start(keep_alive);
    let limit = Arc::new(Semaphore::new(1));
    let started = Instant::now();
    let (mut client, _) = enter(&hall.door, &limit).await;
    assert!(resting(&hall, 1).await);

    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(keep_alive - Duration::from_secs(1), client.read(&mut byte));
    assert!(
        early.await.is_err(),
        "still open a second before its deadline"
    );
    assert!(
        closed(&mut client).await,
        "closed at the keep-alive deadline"
    );
    closed_at_deadline(started, keep_alive);
    assert!(resting(&hall, 0).await);
    assert_eq!(limit.available_permits(), 1, "its permit given back");
    assert!(hall.woken.try_recv().is_err(), "never handed back");
}

#[tokio::test]
async fn a_drain_closes_every_resting_connection_and_ends_the_hall() {
    let hall = start(Duration::from_secs(60));
    let limit = Arc::new(Semaphore::new(2));
    let (mut first, _) = enter(&hall.door, &limit).await;
    let (mut second, _) = enter(&hall.door, &limit).await;
    assert!(resting(&hall, 2).await);

    hall.drain.send(()).unwrap();
    assert!(closed(&mut first).await && closed(&mut second).await);
    tokio::time::timeout(BOUND, hall.task)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(BOUND, hall.drain.closed())
        .await
        .expect("the hall let go of the drain");
    assert_eq!(hall.parked.get(), 0);
    assert_eq!(limit.available_permits(), 2);

    // After the hall has gone, a connection at its door is closed there.
    let (mut late, _) = enter(&hall.door, &limit).await;
    assert!(closed(&mut late).await, "closed at the door");
    assert_eq!(limit.available_permits(), 2);
}

#[tokio::test]
async fn a_client_closing_a_resting_connection_ends_it_in_the_hall() {
    let mut hall = start(Duration::from_secs(60));
    let limit = Arc::new(Semaphore::new(1));
    let (client, _) = enter(&hall.door, &limit).await;
    assert!(resting(&hall, 1).await);
    drop(client);
    assert!(resting(&hall, 0).await, "taken out of the hall");
    assert_eq!(limit.available_permits(), 1, "its permit given back");
    assert!(hall.woken.try_recv().is_err(), "not handed back for a task");
}

#[tokio::test]
async fn a_connection_resting_again_and_again_leaves_no_pile_of_deadlines() {
    let (_door, mut hall) = open(Duration::from_secs(60), None).unwrap();
    let (_client, stream, peer) = pair().await;
    let mut resting = Resting {
        stream: Socket::Plain(stream),
        peer,
        permits: Vec::new(),
        idle_since: Instant::now(),
    };
    // Each rest pushes a deadline that its wake-up leaves behind in the heap.
    for _ in 0..2_000 {
        hall.admit(resting);
        let key = hall.slots.iter().next().map(|(key, _)| key).unwrap();
        resting = hall.remove(key);
        resting.idle_since += Duration::from_secs(1);
    }
    assert!(hall.slots.is_empty());
    assert!(
        hall.deadlines.len() <= EVENTS + 1,
        "{} deadlines left for no resting connection",
        hall.deadlines.len()
    );
}

#[tokio::test]
async fn many_connections_woken_at_once_all_come_back() {
    // More than two epoll reads' worth of events at once.
    const N: usize = 2 * EVENTS + 88;
    let mut hall = start(Duration::from_secs(60));
    let limit = Arc::new(Semaphore::new(N));
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(enter(&hall.door, &limit).await);
    }
    assert!(resting(&hall, N as i64).await);
    for (client, _) in &mut clients {
        client.write_all(b"G").await.unwrap();
    }
    let mut peers = std::collections::HashSet::new();
    for _ in 0..N {
        let woken = tokio::time::timeout(BOUND, hall.woken.recv())
            .await
            .expect("every connection woken within the bound")
            .expect("the hall runs");
        peers.insert(woken.peer);
    }
    let expected: std::collections::HashSet<_> = clients.iter().map(|(_, peer)| *peer).collect();
    assert_eq!(peers, expected, "each connection woken once");
    assert_eq!(hall.parked.get(), 0);
}

/// A TLS connection after its handshake: the client's stream and the server's.
async fn tls_pair() -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    SocketAddr,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let dev = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dev.join("localhost.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(dev.join("localhost.key")).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dev.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connecting = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap()
    });
    let (tcp, peer) = listener.accept().await.unwrap();
    let server = tokio_rustls::TlsAcceptor::from(Arc::new(server))
        .accept(tcp)
        .await
        .unwrap();
    let client = tokio::time::timeout(BOUND, connecting)
        .await
        .unwrap()
        .unwrap();
    (client, server, peer)
}

/// True when the client reads a TLS `close_notify` and then the end (a clean close) within
/// `bound`; a bare FIN reads as an error.
async fn closed_cleanly(
    client: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    bound: Duration,
) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(bound, client.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}

#[tokio::test]
async fn a_tls_connection_rests_with_its_session_and_is_closed_with_a_close_notify() {
    let mut hall = start(Duration::from_secs(60));
    let (mut client, server, peer) = tls_pair().await;
    hall.door.enter(Resting {
        stream: Socket::Tls(Box::new(server)),
        peer,
        permits: Vec::new(),
        idle_since: Instant::now(),
    });
    assert!(
        resting(&hall, 1).await,
        "the TLS connection rests in the hall"
    );

    client
        .write_all(b"GET /next HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let woken = tokio::time::timeout(BOUND, hall.woken.recv())
        .await
        .expect("woken within the bound")
        .expect("the hall runs");
    let Socket::Tls(mut server) = woken.stream else {
        panic!("a TLS connection comes back with its session");
    };
    serves_its_request(server.as_mut(), &mut client).await;

    // Back to rest; a drain closes it as its task would, with a close_notify.
    hall.door.enter(Resting {
        stream: Socket::Tls(server),
        peer,
        permits: Vec::new(),
        idle_since: Instant::now(),
    });
    assert!(resting(&hall, 1).await);
    hall.drain.send(()).unwrap();
    assert!(
        closed_cleanly(&mut client, BOUND).await,
        "a close_notify, then the end"
    );
}

#[tokio::test(start_paused = true)]
async fn the_keep_alive_timeout_closes_a_resting_tls_connection_with_a_close_notify() {
    let keep_alive = Duration::from_secs(30);
    let hall = start(keep_alive);
    let (mut client, server, peer) = tls_pair().await;
    let started = Instant::now();
    hall.door.enter(Resting {
        stream: Socket::Tls(Box::new(server)),
        peer,
        permits: Vec::new(),
        idle_since: started,
    });
    assert!(resting(&hall, 1).await);
    assert!(
        closed_cleanly(&mut client, keep_alive + BOUND).await,
        "a close_notify, then the end"
    );
    closed_at_deadline(started, keep_alive);
    assert!(resting(&hall, 0).await);
}

#[tokio::test]
async fn after_a_spike_the_hall_gives_its_room_back_and_still_wakes_who_rests() {
    const N: usize = 200;
    let (_door, mut hall) = open(Duration::from_secs(60), None).unwrap();
    hall.compact_above = 16;
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        let (client, stream, peer) = pair().await;
        hall.admit(Resting {
            stream: Socket::Plain(stream),
            peer,
            permits: Vec::new(),
            idle_since: Instant::now(),
        });
        clients.push((client, peer));
    }
    let peak = hall.slots.capacity();
    // The spike ends: all but the last ten leave (the low keys, so the ten must move).
    for key in 0..N - 10 {
        drop(hall.remove(key));
    }
    hall.compact();
    assert!(
        hall.slots.capacity() < peak / 4,
        "room kept: {} slots for {} connections (peak {peak})",
        hall.slots.capacity(),
        hall.slots.len()
    );
    assert_eq!(
        hall.deadlines.len(),
        10,
        "deadlines rebuilt under the new keys"
    );
    // The ten that moved are watched under their new keys: each comes back when its client writes.
    for (client, _) in &mut clients[N - 10..] {
        client.write_all(b"G").await.unwrap();
    }
    let mut woken = std::collections::HashSet::new();
    for _ in 0..50 {
        hall.wake_ready(&mut |resting: Resting| {
            woken.insert(resting.peer);
        });
        if woken.len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let expected: std::collections::HashSet<_> =
        clients[N - 10..].iter().map(|(_, p)| *p).collect();
    assert_eq!(woken, expected);
    assert!(hall.slots.is_empty());
}
