//! TLS, HTTP/2, gRPC and WebSocket end to end with real clients and servers on loopback, using the
//! development certificates in certs-dev/.

#![allow(clippy::unwrap_used)] // tests may unwrap: a failure is the assertion

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn dev(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs-dev")
        .join(file)
}

fn client_tls(alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dev("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    config
}

/// The leaf certificate a TLS listener presents for `sni`.
async fn presented(addr: SocketAddr, sni: &str) -> CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn first_cert(file: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// An HTTP/2 (h2c) upstream: echoes its name, the HTTP version it saw and, for gRPC-shaped calls,
/// answers with trailers (`grpc-status` from the request's `x-grpc-status`, default 0).
async fn h2_upstream(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service_fn(move |req: Request<Incoming>| async move {
                let status = req
                    .headers()
                    .get("x-grpc-status")
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("0"));
                let version = format!("{:?}", req.version());
                let te = req.headers().get("te").cloned();
                let _ = req.into_body().collect().await;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", status);
                trailers.insert("grpc-message", HeaderValue::from_static("done"));
                let frames = vec![
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{name} {version}")))),
                    Ok(Frame::trailers(trailers)),
                ];
                let mut response =
                    Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                response
                    .headers_mut()
                    .insert("x-served-by", HeaderValue::from_static(name));
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/grpc"));
                if let Some(te) = te {
                    response.headers_mut().insert("x-saw-te", te);
                }
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

fn tls_listener_config(stable: SocketAddr, canary_h2: SocketAddr, listener_tls: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: tls, addr: "127.0.0.1:0", tls: {listener_tls} }}
  - {{ name: plain, addr: "127.0.0.1:0" }}
routes:
  - name: app
    versions:
      - {{ name: stable, endpoints: ["{stable}"], weight: 100 }}
      - {{ name: canary, endpoints: ["{canary_h2}"], weight: 0, protocol: h2 }}
    rules:
      - match: {{ header: {{ name: "x-canary", value: "1" }} }}
        version: canary
"#
    )
}

fn single_cert() -> String {
    format!(
        "{{ cert: \"{}\", key: \"{}\" }}",
        dev("localhost.crt").display(),
        dev("localhost.key").display()
    )
}

#[tokio::test]
async fn https_through_the_proxy_is_verified_against_the_dev_ca() {
    let stable = Upstream::start("stable").await;
    let canary = h2_upstream("canary").await;
    let proxy = start_proxy(&tls_listener_config(stable.addr, canary, &single_cert())).await;
    let port = proxy.addr("tls").unwrap().port();

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(&[]))
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let response = client
        .request(
            Request::get(format!("https://localhost:{port}/hello"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-served-by"], "stable");
    assert_eq!(stable.last().headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn sni_picks_the_certificate_and_a_replaced_file_is_served_to_the_next_handshake() {
    let stable = Upstream::start("stable").await;
    let canary = h2_upstream("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        dir.path().join("default.crt"),
        dir.path().join("default.key"),
    );
    std::fs::copy(dev("localhost.crt"), &cert).unwrap();
    std::fs::copy(dev("localhost.key"), &key).unwrap();
    let certificates = format!(
        r#"{{ certificates: [ {{ server_names: ["shop.localhost", "*.shop.localhost"], cert: "{}", key: "{}" }}, {{ cert: "{}", key: "{}" }} ] }}"#,
        dev("shop.localhost.crt").display(),
        dev("shop.localhost.key").display(),
        cert.display(),
        key.display()
    );
    let proxy = start_proxy(&tls_listener_config(stable.addr, canary, &certificates)).await;
    let addr = proxy.addr("tls").unwrap();

    let shop = first_cert(&dev("shop.localhost.crt"));
    let local = first_cert(&dev("localhost.crt"));
    assert_eq!(presented(addr, "shop.localhost").await, shop);
    assert_eq!(presented(addr, "eu.shop.localhost").await, shop);
    assert_eq!(
        presented(addr, "localhost").await,
        local,
        "no match: the default"
    );

    // Replace the default certificate on disk (new files renamed into place, key first).
    std::fs::copy(dev("shop.localhost.key"), dir.path().join("new.key")).unwrap();
    std::fs::copy(dev("shop.localhost.crt"), dir.path().join("new.crt")).unwrap();
    std::fs::rename(dir.path().join("new.key"), &key).unwrap();
    std::fs::rename(dir.path().join("new.crt"), &cert).unwrap();
    // Without SNI a client gets the default certificate; once the new file is served, it
    // verifies for shop.localhost (the old one could not).
    let no_sni = tokio_rustls::TlsConnector::from(Arc::new({
        let mut c = client_tls(&[]);
        c.enable_sni = false;
        c
    }));
    let mut served = None;
    for _ in 0..100 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        if let Ok(tls) = no_sni
            .connect(ServerName::try_from("shop.localhost").unwrap(), tcp)
            .await
        {
            served = Some(
                tls.get_ref().1.peer_certificates().unwrap()[0]
                    .clone()
                    .into_owned(),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served,
        Some(shop),
        "the replaced default certificate is served to new handshakes"
    );
}

#[tokio::test]
async fn http2_over_tls_and_h2c_reach_http1_and_http2_upstreams() {
    let stable = Upstream::start("stable").await;
    let canary = h2_upstream("canary").await;
    let proxy = start_proxy(&tls_listener_config(stable.addr, canary, &single_cert())).await;
    let tls_port = proxy.addr("tls").unwrap().port();
    let plain = proxy.addr("plain").unwrap();

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(&[]))
        .https_only()
        .enable_http2()
        .build();
    let over_tls: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(https);
    let h2c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();

    for (label, url) in [
        ("h2 over TLS", format!("https://localhost:{tls_port}/")),
        ("h2c", format!("http://{plain}/")),
    ] {
        for (pin, want) in [("0", "stable"), ("1", "canary")] {
            let request = Request::get(&url)
                .header("x-canary", pin)
                .body(Empty::new())
                .unwrap();
            let response = if label == "h2c" {
                h2c.request(request).await
            } else {
                over_tls.request(request).await
            }
            .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(response.version(), http::Version::HTTP_2, "{label}");
            assert_eq!(response.status(), 200, "{label}");
            assert_eq!(response.headers()["x-served-by"], want, "{label}");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            if want == "canary" {
                assert_eq!(
                    body, "canary HTTP/2.0",
                    "{label}: the canary upstream speaks HTTP/2"
                );
            }
        }
    }
    assert_eq!(
        stable.count(),
        2,
        "the HTTP/1.1 upstream got one request per client"
    );
}

#[tokio::test]
async fn a_grpc_call_keeps_its_trailers_and_a_failure_trailer_counts_as_an_error() {
    let stable = Upstream::start("stable").await;
    let canary = h2_upstream("canary").await;
    let proxy = start_proxy(&tls_listener_config(stable.addr, canary, &single_cert())).await;
    let plain = proxy.addr("plain").unwrap();
    let h2c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();

    let call = |grpc_status: &'static str| {
        Request::post(format!("http://{plain}/shop.Cart/Add"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-canary", "1")
            .header("x-grpc-status", grpc_status)
            .body(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x02hi")))
            .unwrap()
    };
    let response = h2c.request(call("0")).await.unwrap();
    assert_eq!(
        response.headers()["x-served-by"],
        "canary",
        "the header rule pins gRPC too"
    );
    assert_eq!(
        response.headers()["x-saw-te"],
        "trailers",
        "te: trailers reached the upstream"
    );
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers came through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");

    let response = h2c.request(call("14")).await.unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");

    let stats = &proxy.snapshot().routes[0].versions[1].metrics.stats;
    eventually(Duration::from_secs(10), async || {
        stats.counts().requests == 2
    })
    .await;
    let counts = stats.counts();
    assert_eq!(
        (counts.requests, counts.errors),
        (2, 1),
        "grpc-status 14 is an error for the canary"
    );
}

/// A WebSocket echo server that prefixes each message with its name.
async fn ws_echo(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() {
                        let reply = format!("{name}: {}", msg.into_text().unwrap());
                        if ws.send(reply.into()).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_websocket_echo_goes_through_and_stays_with_the_users_version() {
    let (stable, canary) = (ws_echo("stable").await, ws_echo("canary").await);
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: chat
    versions:
      - {{ name: stable, endpoints: ["{stable}"], weight: 50 }}
      - {{ name: canary, endpoints: ["{canary}"], weight: 50 }}
    cohort: {{ key: {{ header: "x-user-id" }}, salt: "chat" }}
"#
    ))
    .await;
    let addr = proxy.addr("public").unwrap();
    let version_of = |user: &str| {
        if switchyard::route::bucket_of("chat", user.as_bytes()) < 5_000 {
            "stable"
        } else {
            "canary"
        }
    };
    for user in ["alice", "bob", "carol", "dave"] {
        for _ in 0..3 {
            let mut request =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    format!("ws://{addr}/socket"),
                )
                .unwrap();
            request
                .headers_mut()
                .insert("x-user-id", HeaderValue::from_str(user).unwrap());
            let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
            assert_eq!(response.status(), 101);
            ws.send("hello".into()).await.unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(
                reply.into_text().unwrap().as_str(),
                format!("{}: hello", version_of(user)),
                "{user}"
            );
            ws.send("again".into()).await.unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(
                reply.into_text().unwrap().as_str(),
                format!("{}: again", version_of(user))
            );
            let _ = ws.close(None).await;
        }
    }
}

#[tokio::test]
async fn a_version_reached_over_tls_is_verified_with_its_ca() {
    // An HTTPS upstream with the development localhost certificate.
    let store = switchyard::data::tls::CertStore::load(&switchyard::config::ListenerTls {
        certificates: vec![switchyard::config::CertificateFiles {
            server_names: vec![],
            cert: dev("localhost.crt"),
            key: dev("localhost.key"),
        }],
    })
    .unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(switchyard::data::tls::server_config(store).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"secure"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: secure
    versions:
      - name: stable
        endpoints: ["{upstream}"]
        weight: 1
        tls: {{ ca: "{}", server_name: localhost }}
"#,
        dev("ca.crt").display()
    ))
    .await;
    let reply = get(
        &client(),
        &format!("http://{}/", proxy.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "secure");

    // Without the CA, the same upstream is refused: verification is on.
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: secure
    versions: [{{ name: stable, endpoints: ["{upstream}"], weight: 1, tls: {{ server_name: localhost }} }}]
"#
    ))
    .await;
    let reply = get(
        &client(),
        &format!("http://{}/", proxy.addr("public").unwrap()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.body);
}

#[tokio::test]
async fn health_checks_reach_a_tls_version_over_tls_with_its_ca() {
    // An HTTPS-only upstream that counts the probes it is sent.
    let store = switchyard::data::tls::CertStore::load(&switchyard::config::ListenerTls {
        certificates: vec![switchyard::config::CertificateFiles {
            server_names: vec![],
            cert: dev("localhost.crt"),
            key: dev("localhost.key"),
        }],
    })
    .unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(switchyard::data::tls::server_config(store).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = probes.clone();
    tokio::spawn(async move {
        for _ in 0..200 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    if req.uri().path() == "/healthz" {
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let proxy = start_proxy(&format!(
        r#"
listeners: [{{ name: public, addr: "127.0.0.1:0" }}]
routes:
  - name: secure
    health_check: {{ path: /healthz, interval: 100ms, timeout: 1s, healthy_threshold: 1 }}
    versions:
      - name: stable
        endpoints: ["{upstream}"]
        weight: 1
        tls: {{ ca: "{}", server_name: localhost }}
"#,
        dev("ca.crt").display()
    ))
    .await;
    let healthy = || proxy.snapshot().routes[0].versions[0].health[0].checked_healthy();
    assert!(
        eventually(Duration::from_secs(10), async || healthy()).await,
        "the endpoint passed a check made over TLS"
    );
    assert!(probes.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
