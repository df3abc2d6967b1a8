//! TLS on both protocols against in-test servers on 127.0.0.1, with
//! certificates made by rcgen: the right CA is trusted, a wrong one is not,
//! the server name can be overridden, and a server that requires a client
//! certificate accepts the client with one and refuses it without.

mod common;

use std::time::Duration;

use common::{Ca, Leaf};
use switchyard_client::{ClientError, ClientOptions, GrpcClient, HttpClient, TlsOptions};

/// Every call of these tests is bounded: a handshake that went wrong must
/// fail, not hang.
const BOUND: Duration = Duration::from_secs(10);

fn options(tls: TlsOptions) -> ClientOptions {
    ClientOptions::default()
        .with_connect_timeout(BOUND)
        .with_request_timeout(BOUND)
        .with_tls(tls)
}

fn trusting(ca: &Ca) -> TlsOptions {
    TlsOptions::default().with_ca_pem(ca.pem.as_bytes())
}

fn with_identity(tls: TlsOptions, leaf: &Leaf) -> TlsOptions {
    tls.with_client_identity_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
}

/// `live()` over HTTPS: the URL has no scheme, so the TLS options turn TLS on.
async fn http_live(addr: std::net::SocketAddr, tls: TlsOptions) -> Result<bool, ClientError> {
    let client = HttpClient::with_options(&addr.to_string(), &options(tls))?;
    client.live().await
}

async fn grpc_live(addr: std::net::SocketAddr, tls: TlsOptions) -> Result<bool, ClientError> {
    let client = GrpcClient::connect_with_options(&format!("https://{addr}"), &options(tls)).await?;
    client.live().await
}

/// A failed handshake: a transport error (or, over gRPC, a status made by
/// the client for one) whose message names the cause, `why`.
fn assert_refused(result: Result<bool, ClientError>, why: &str) {
    match result {
        Err(ClientError::Transport(m) | ClientError::Grpc { message: m, .. }) if m.contains(why) => {}
        other => panic!("expected a TLS failure for '{why}', got {other:?}"),
    }
}

#[tokio::test]
async fn http_trusts_the_given_ca_only() {
    let (ca, other) = (Ca::new("test CA"), Ca::new("other CA"));
    let server = common::https_server(&ca.server_leaf(), None).await;
    assert!(http_live(server.addr, trusting(&ca)).await.unwrap());
    let https = HttpClient::with_options(&format!("https://{}", server.addr), &options(trusting(&ca))).unwrap();
    assert!(https.live().await.unwrap());
    assert_refused(http_live(server.addr, trusting(&other)).await, "UnknownIssuer");
}

#[tokio::test]
async fn http_checks_the_overridden_server_name() {
    let ca = Ca::new("test CA");
    // The certificate names 127.0.0.1 and switchyard.test.
    let server = common::https_server(&ca.server_leaf(), None).await;
    let named = |name: &str| trusting(&ca).with_server_name(name);
    assert!(http_live(server.addr, named("switchyard.test")).await.unwrap());
    assert_refused(
        http_live(server.addr, named("elsewhere.test")).await,
        "not valid for name \"elsewhere.test\"",
    );
}

#[tokio::test]
async fn http_mutual_tls() {
    let ca = Ca::new("test CA");
    let server = common::https_server(&ca.server_leaf(), Some(&ca)).await;
    let client_cert = ca.client_leaf();
    assert!(
        http_live(server.addr, with_identity(trusting(&ca), &client_cert))
            .await
            .unwrap()
    );
    assert_refused(http_live(server.addr, trusting(&ca)).await, "CertificateRequired");
    let stranger = Ca::new("other CA").client_leaf();
    assert_refused(
        http_live(server.addr, with_identity(trusting(&ca), &stranger)).await,
        "UnknownCA",
    );
}

#[tokio::test]
async fn grpc_trusts_the_given_ca_only() {
    let (ca, other) = (Ca::new("test CA"), Ca::new("other CA"));
    let server = common::grpc_tls_server(&ca.server_leaf(), None).await;
    assert!(grpc_live(server.addr, trusting(&ca)).await.unwrap());
    // No scheme: the TLS options turn TLS on.
    let client = GrpcClient::connect_with_options(&server.addr.to_string(), &options(trusting(&ca)))
        .await
        .unwrap();
    assert!(client.live().await.unwrap());
    assert_refused(grpc_live(server.addr, trusting(&other)).await, "UnknownIssuer");
}

#[tokio::test]
async fn grpc_checks_the_overridden_server_name() {
    let ca = Ca::new("test CA");
    let server = common::grpc_tls_server(&ca.server_leaf(), None).await;
    let named = |name: &str| trusting(&ca).with_server_name(name);
    assert!(grpc_live(server.addr, named("switchyard.test")).await.unwrap());
    assert_refused(
        grpc_live(server.addr, named("elsewhere.test")).await,
        "not valid for name \"elsewhere.test\"",
    );
}

#[tokio::test]
async fn grpc_mutual_tls() {
    let ca = Ca::new("test CA");
    let server = common::grpc_tls_server(&ca.server_leaf(), Some(&ca)).await;
    let client_cert = ca.client_leaf();
    assert!(
        grpc_live(server.addr, with_identity(trusting(&ca), &client_cert))
            .await
            .unwrap()
    );
    assert_refused(grpc_live(server.addr, trusting(&ca)).await, "CertificateRequired");
    let stranger = Ca::new("other CA").client_leaf();
    assert_refused(
        grpc_live(server.addr, with_identity(trusting(&ca), &stranger)).await,
        "UnknownCA",
    );
}

#[tokio::test]
async fn bad_tls_options_fail_before_connecting() {
    let ca = Ca::new("test CA");
    let url = "127.0.0.1:9";
    let garbage = TlsOptions::default().with_ca_pem(&b"not PEM"[..]);
    for tls in [
        garbage,
        trusting(&ca).with_client_identity_pem(ca.pem.as_bytes(), &b"no key here"[..]),
        trusting(&ca).with_server_name("not a name!"),
    ] {
        let http = HttpClient::with_options(url, &options(tls.clone()));
        assert!(
            matches!(http, Err(ClientError::InvalidArgument(_))),
            "{tls:?}: {http:?}"
        );
        let grpc = GrpcClient::connect_with_options(url, &options(tls.clone())).await;
        assert!(
            matches!(grpc, Err(ClientError::InvalidArgument(_))),
            "{tls:?}: {grpc:?}"
        );
    }
    // TLS options with an explicit http:// URL are refused, not ignored.
    let plain = HttpClient::with_options("http://127.0.0.1:9", &options(trusting(&ca)));
    assert!(matches!(plain, Err(ClientError::InvalidArgument(m)) if m.contains("https://")));
    let plain = GrpcClient::connect_with_options("http://127.0.0.1:9", &options(trusting(&ca))).await;
    assert!(matches!(plain, Err(ClientError::InvalidArgument(m)) if m.contains("https://")));
}
