//! A server that accepts connections and never answers: every call fails
//! with `ClientError::Timeout` after the configured request timeout, over
//! both protocols, and the load generator reports the same.

mod common;

use std::time::{Duration, Instant};

use switchyard_client::perf::{self, Mode, PerfConfig};
use switchyard_client::{
    ClientError, ClientOptions, Data, GrpcClient, HttpClient, InferOptions, Tensor, TimeoutPhase, TlsOptions,
};

const TIMEOUT: Duration = Duration::from_millis(300);
/// How long a timed-out call may take at most, scheduling included.
const BOUND: Duration = Duration::from_secs(5);

fn options() -> ClientOptions {
    ClientOptions::default().with_request_timeout(TIMEOUT)
}

fn assert_request_timeout(result: Result<impl std::fmt::Debug, ClientError>, started: Instant) {
    let elapsed = started.elapsed();
    match result {
        Err(ref e @ ClientError::Timeout { phase, after }) => {
            assert_eq!((phase, after), (TimeoutPhase::Request, TIMEOUT));
            assert_eq!(e.to_string(), "request timed out after 300ms");
        }
        other => panic!("expected a request timeout, got {other:?}"),
    }
    assert!(elapsed >= TIMEOUT, "returned after {elapsed:?}, before the timeout");
    assert!(elapsed < BOUND, "returned after {elapsed:?}");
}

#[tokio::test]
async fn http_calls_to_a_silent_server_time_out() {
    let server = common::silent_server().await;
    let client = HttpClient::with_options(&server.addr.to_string(), &options()).unwrap();
    let started = Instant::now();
    assert_request_timeout(client.live().await, started);
    let inputs = [Tensor::new("IN", vec![1], Data::I32(vec![1]))];
    let started = Instant::now();
    assert_request_timeout(client.infer("m", &inputs, &InferOptions::default()).await, started);
}

#[tokio::test]
async fn grpc_calls_to_a_silent_server_time_out() {
    let server = common::silent_server().await;
    let started = Instant::now();
    let connected = tokio::time::timeout(
        BOUND,
        GrpcClient::connect_with_options(&server.addr.to_string(), &options()),
    )
    .await
    .expect("connecting is bounded by the connect timeout");
    let client = connected.unwrap();
    assert!(started.elapsed() < BOUND);
    let started = Instant::now();
    assert_request_timeout(client.live().await, started);
    let inputs = [Tensor::new("IN", vec![1], Data::I32(vec![1]))];
    let started = Instant::now();
    assert_request_timeout(client.infer("m", &inputs, &InferOptions::default()).await, started);
}

fn assert_connect_timeout(result: Result<impl std::fmt::Debug, ClientError>, started: Instant) {
    let elapsed = started.elapsed();
    match result {
        Err(ref e @ ClientError::Timeout { phase, after }) => {
            assert_eq!((phase, after), (TimeoutPhase::Connect, TIMEOUT));
            assert_eq!(e.to_string(), "connect timed out after 300ms");
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    assert!(elapsed < BOUND, "returned after {elapsed:?}");
}

#[tokio::test]
async fn the_connect_timeout_bounds_a_tls_handshake_that_never_completes() {
    // TCP connects, but the TLS handshake never gets an answer; the request
    // timeout (default 60 s) is not what ends it.
    let server = common::silent_server().await;
    let ca = common::Ca::new("timeout test CA");
    let options = ClientOptions::default()
        .with_connect_timeout(TIMEOUT)
        .with_tls(TlsOptions::default().with_ca_pem(ca.pem.as_bytes()));
    let url = format!("https://{}", server.addr);
    let started = Instant::now();
    let grpc = tokio::time::timeout(BOUND, GrpcClient::connect_with_options(&url, &options)).await;
    assert_connect_timeout(grpc.expect("bounded"), started);
    let http = HttpClient::with_options(&url, &options).unwrap();
    let started = Instant::now();
    assert_connect_timeout(
        tokio::time::timeout(BOUND, http.live()).await.expect("bounded"),
        started,
    );
}

#[tokio::test]
async fn the_load_generator_fails_fast_on_a_silent_server() {
    let server = common::silent_server().await;
    for protocol in [perf::Protocol::Http, perf::Protocol::Grpc] {
        let mut config = PerfConfig::new(server.addr.to_string(), protocol, "m", Mode::Closed { concurrency: 1 });
        config.client = options();
        let started = Instant::now();
        let e = perf::run(&config).await.unwrap_err();
        assert!(
            matches!(e, ClientError::Timeout { phase: TimeoutPhase::Request, after } if after == TIMEOUT),
            "{protocol:?}: {e}"
        );
        assert!(started.elapsed() < BOUND, "{protocol:?}: {:?}", started.elapsed());
    }
}
