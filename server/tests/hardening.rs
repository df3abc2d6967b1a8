//! The server attacked from outside, as a client on the network could: each
//! attack is bounded by a limit, and a well-behaved client is still served
//! meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, WAIT, assert_still_serving, temp_repo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or `limit` passes); returns what was read and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response (head and `content-length` body), or what came before the peer closed.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("no complete response in time: {text:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends raw bytes to the HTTP port and returns the response (status line and body).
async fn raw_http(addr: std::net::SocketAddr, request: &[u8], then_close_write: bool) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    if then_close_write {
        s.shutdown().await.unwrap();
    }
    read_response(&mut s).await
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

fn json_error_of(response: &str) -> String {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {response:?}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_advertises_a_stream_limit_and_serves_others_while_one_client_holds_streams() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |c| c.http2_max_concurrent_streams = 50).await;
    let tcp = TcpStream::connect(s.server.grpc_addr).await.unwrap();
    let (client, mut conn) = h2::client::handshake(tcp).await.unwrap();
    // After a ping round trip the server's SETTINGS have been received.
    let mut ping = conn.ping_pong().unwrap();
    tokio::select! {
        r = &mut conn => panic!("connection ended: {r:?}"),
        r = ping.ping(h2::Ping::opaque()) => { r.unwrap(); }
    }
    assert_eq!(conn.max_concurrent_send_streams(), 50);
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    // Open far more streams than allowed and leave them all open.
    let mut held = Vec::new();
    let mut client = client;
    for _ in 0..500 {
        let req = http::Request::post(format!(
            "http://{}/inference.GRPCInferenceService/ServerLive",
            s.server.grpc_addr
        ))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
        client = match tokio::time::timeout(Duration::from_secs(5), client.ready()).await {
            Ok(Ok(c)) => c,
            _ => break,
        };
        match client.send_request(req, false) {
            Ok(pair) => held.push(pair),
            Err(_) => break,
        }
    }
    assert_still_serving(&s).await;
    drop(held);
    driver.abort();
    assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_does_not_starve_other_clients() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let addr = s.server.grpc_addr;
    let attacker = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let started = Instant::now();
        let mut sent = 0u32;
        // Open and reset at once, as fast as the connection lets us; bounded.
        while sent < 20_000 && started.elapsed() < Duration::from_secs(10) {
            client = match client.ready().await {
                Ok(c) => c,
                Err(_) => break, // the server closed the abusive connection
            };
            let req = http::Request::post(format!("http://{addr}/inference.GRPCInferenceService/ServerLive"))
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            match client.send_request(req, false) {
                Ok((response, mut body)) => {
                    body.send_reset(h2::Reason::CANCEL);
                    drop(response);
                }
                Err(_) => break,
            }
            sent += 1;
        }
        driver.abort();
        sent
    });
    // Meanwhile, well-behaved clients are served.
    for _ in 0..20 {
        assert_still_serving(&s).await;
    }
    let sent = tokio::time::timeout(WAIT, attacker).await.unwrap().unwrap();
    assert!(sent > 0);
    assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_are_closed_while_others_are_served() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |c| {
        c.connection_idle_timeout_secs = 1;
        c.header_read_timeout_secs = 1;
    })
    .await;
    // A connection that never sends anything, on every listener.
    let mut idle = Vec::new();
    for addr in [s.server.http_addr, s.server.grpc_addr, s.server.metrics_addr] {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // A slowloris client: headers that never finish, a byte at a time.
    let mut slow = TcpStream::connect(s.server.http_addr).await.unwrap();
    slow.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dribble = async {
        for _ in 0..100 {
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let (closed_by_server, ()) = tokio::join!(dribble, assert_still_serving(&s));
    assert!(closed_by_server, "the slowloris connection was held for 10 s");
    for mut c in idle {
        let (_, closed) = read_until_closed(&mut c, Duration::from_secs(10)).await;
        assert!(closed, "an idle connection was not closed");
    }
    assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_a_json_503() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |c| c.max_connections = 3).await;
    let addr = s.server.http_addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // The listener takes the three; the fourth is refused at once.
    let mut refused = None;
    for _ in 0..3 {
        let r = raw_http(addr, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
        if status_of(&r) == 503 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a connection over the limit was accepted");
    assert!(json_error_of(&r).contains("too many connections"), "{r}");
    drop(held);
    // Once the held connections are gone, clients are served again (bounded retry:
    // the server learns of the closes asynchronously).
    let deadline = Instant::now() + WAIT;
    loop {
        let r = raw_http(
            addr,
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
        if status_of(&r) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_slow_bodies_get_clear_errors() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |c| {
        c.http_max_body_bytes = 4096;
        c.body_read_timeout_secs = 1;
    })
    .await;
    let addr = s.server.http_addr;
    let infer = "POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";

    // Truncated: the client promises 100 bytes, sends 10 and stops writing.
    let r = raw_http(
        addr,
        format!("{infer}Content-Length: 100\r\n\r\n{{\"inputs\":").as_bytes(),
        true,
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(json_error_of(&r).contains("incomplete"), "{r}");

    // Malformed chunked encoding.
    let r = raw_http(
        addr,
        format!("{infer}Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n").as_bytes(),
        true,
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");

    // Over the limit, chunked (no Content-Length to refuse early).
    let chunk = "x".repeat(3000);
    let body = format!(
        "{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let r = raw_http(
        addr,
        format!("{infer}Transfer-Encoding: chunked\r\n\r\n{body}").as_bytes(),
        false,
    )
    .await;
    assert_eq!(status_of(&r), 413, "{r}");
    assert!(json_error_of(&r).contains("larger than the limit"), "{r}");

    // Small control endpoints answer JSON too.
    let big = format!("{{\"version\": \"{}\"}}", "1".repeat(5000));
    let r = raw_http(
        addr,
        format!(
            "PUT /v2/models/simple/default HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
        false,
    )
    .await;
    assert_eq!(status_of(&r), 413, "{r}");
    json_error_of(&r);

    // Stalled: half a body, then nothing.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(format!("{infer}Content-Length: 100\r\n\r\n{{\"inputs\":").as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut stalled).await;
    assert_eq!(status_of(&r), 408, "{r}");
    assert!(json_error_of(&r).contains("too slowly"), "{r}");
    assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_echo_client_input_at_full_length() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let name = "m".repeat(1 << 20);
    let e = s.grpc.model_metadata(&name, None).await.unwrap_err().to_string();
    assert!(e.len() < 4096, "gRPC error of {} bytes", e.len());
    assert!(e.contains("unknown model"), "{e}");
    let client = reqwest::Client::new();
    let r = client
        .get(format!(
            "http://{}/v2/models/{}",
            s.server.http_addr,
            "m".repeat(20_000)
        ))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().len() <= 1024, "{v}");
    assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeouts_are_bounded() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let a: Vec<i32> = (0..16).collect();
    let body = json!({
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": a}
        ],
        "parameters": {"timeout": 18446744073709551615u64}
    });
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/v2/models/simple/infer", s.server.http_addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("'timeout'"), "{v}");
    assert_still_serving(&s).await;
    s.stop().await;
}
