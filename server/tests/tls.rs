//! TLS and mTLS on every listener, with certificates made by the test (never
//! committed): the library client with a CA, curl, openssl (TLS 1.0/1.1
//! refused), client certificates under mTLS, and certificates reloaded from
//! their files without a restart (a bad new one refused, the old one serving).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{WAIT, simple_inputs, temp_repo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use switchyard::{Config, Server};
use switchyard_client::{ClientOptions, Data, GrpcClient, HttpClient, InferOptions, TlsOptions};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Leaf {
        self.leaf(&["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self) -> Leaf {
        self.leaf(&["client.test"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn write_leaf(dir: &Path, leaf: &Leaf) {
    std::fs::write(dir.join("server.crt"), &leaf.cert).unwrap();
    std::fs::write(dir.join("server.key"), &leaf.key).unwrap();
}

/// A server with TLS on every listener; `mutual`: client certificates of `client_ca` required.
async fn tls_server(repo: &Path, certs: &Path, client_ca: Option<&Ca>) -> Server {
    let mut c = Config::for_repository(repo);
    c.grpc_use_ssl = true;
    c.http_use_ssl = true;
    c.metrics_use_ssl = true;
    for (cert, key) in [
        (&mut c.grpc_server_cert, &mut c.grpc_server_key),
        (&mut c.http_server_cert, &mut c.http_server_key),
    ] {
        *cert = Some(certs.join("server.crt"));
        *key = Some(certs.join("server.key"));
    }
    if let Some(ca) = client_ca {
        std::fs::write(certs.join("clients.pem"), &ca.pem).unwrap();
        (c.grpc_use_ssl_mutual, c.http_use_ssl_mutual) = (true, true);
        c.grpc_root_cert = Some(certs.join("clients.pem"));
        c.http_root_cert = Some(certs.join("clients.pem"));
    }
    let server = Server::start(c).await.unwrap();
    tokio::time::timeout(WAIT, server.wait_ready()).await.unwrap();
    server
}

fn options(tls: TlsOptions) -> ClientOptions {
    ClientOptions::default()
        .with_connect_timeout(Duration::from_secs(10))
        .with_request_timeout(Duration::from_secs(10))
        .with_tls(tls)
}

async fn infer_both(server: &Server, tls: TlsOptions) -> Result<(), String> {
    let a: Vec<i32> = (0..16).collect();
    let inputs = simple_inputs(&a, &a);
    let want = Data::I32(a.iter().map(|x| x * 2).collect());
    let opts = options(tls);
    let http = HttpClient::with_options(&format!("https://{}", server.http_addr), &opts).map_err(|e| e.to_string())?;
    let r = http
        .infer("simple", &inputs, &InferOptions::default())
        .await
        .map_err(|e| format!("http: {e}"))?;
    assert_eq!(r.output("OUTPUT0").unwrap().data, want);
    let grpc = GrpcClient::connect_with_options(&format!("https://{}", server.grpc_addr), &opts)
        .await
        .map_err(|e| format!("grpc: {e}"))?;
    let r = grpc
        .infer("simple", &inputs, &InferOptions::default())
        .await
        .map_err(|e| format!("grpc: {e}"))?;
    assert_eq!(r.output("OUTPUT0").unwrap().data, want);
    Ok(())
}

fn curl(ca: &Path, url: &str) -> std::process::Output {
    std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl runs")
}

fn s_client(addr: SocketAddr, version: &str) -> bool {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            version,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("BEGIN CERTIFICATE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_serves_tls_and_refuses_old_versions() {
    let repo = temp_repo(&["simple"]);
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    write_leaf(certs.path(), &ca.server());
    std::fs::write(certs.path().join("ca.pem"), &ca.pem).unwrap();
    let server = tls_server(repo.path(), certs.path(), None).await;
    let trust = TlsOptions::default().with_ca_pem(ca.pem.as_bytes());
    infer_both(&server, trust.clone()).await.unwrap();
    // Another CA is not trusted.
    let other = Ca::new("other CA");
    assert!(
        infer_both(&server, TlsOptions::default().with_ca_pem(other.pem.as_bytes()))
            .await
            .is_err()
    );
    // curl with the CA file, on the HTTP and metrics listeners; plaintext is refused.
    let ca_file = certs.path().join("ca.pem");
    let out = curl(
        &ca_file,
        &format!("https://127.0.0.1:{}/v2/health/ready", server.http_addr.port()),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ready\":true"));
    let out = curl(
        &ca_file,
        &format!("https://127.0.0.1:{}/metrics", server.metrics_addr.port()),
    );
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("switchyard_"));
    let plain = reqwest::get(format!("http://{}/v2/health/ready", server.http_addr)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // TLS 1.2 and 1.3 only.
    for addr in [server.http_addr, server.grpc_addr] {
        assert!(s_client(addr, "-tls1_2"), "TLS 1.2 works");
        assert!(!s_client(addr, "-tls1_1"), "TLS 1.1 refused");
        assert!(!s_client(addr, "-tls1"), "TLS 1.0 refused");
    }
    server.shutdown();
    tokio::time::timeout(WAIT, server.wait()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let repo = temp_repo(&["simple"]);
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    write_leaf(certs.path(), &ca.server());
    let server = tls_server(repo.path(), certs.path(), Some(&clients)).await;
    let trust = TlsOptions::default().with_ca_pem(ca.pem.as_bytes());
    assert!(
        infer_both(&server, trust.clone()).await.is_err(),
        "no client certificate"
    );
    let stranger = Ca::new("stranger").client();
    let wrong = trust
        .clone()
        .with_client_identity_pem(stranger.cert.as_bytes(), stranger.key.as_bytes());
    assert!(infer_both(&server, wrong).await.is_err(), "a certificate of another CA");
    let id = clients.client();
    let good = trust.with_client_identity_pem(id.cert.as_bytes(), id.key.as_bytes());
    infer_both(&server, good).await.unwrap();
    server.shutdown();
    tokio::time::timeout(WAIT, server.wait()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_a_restart_and_bad_ones_are_refused() {
    let repo = temp_repo(&["simple"]);
    let certs = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    write_leaf(certs.path(), &old_ca.server());
    let server = tls_server(repo.path(), certs.path(), None).await;
    let old = TlsOptions::default().with_ca_pem(old_ca.pem.as_bytes());
    let new = TlsOptions::default().with_ca_pem(new_ca.pem.as_bytes());
    // A connection opened before the rotation keeps working after it.
    let before = HttpClient::with_options(&format!("https://{}", server.http_addr), &options(old.clone())).unwrap();
    assert!(before.ready().await.unwrap());
    infer_both(&server, old.clone()).await.unwrap();

    write_leaf(certs.path(), &new_ca.server());
    let deadline = Instant::now() + WAIT;
    while infer_both(&server, new.clone()).await.is_err() {
        assert!(Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        infer_both(&server, old).await.is_err(),
        "new handshakes use the new certificate"
    );
    assert!(
        before.ready().await.unwrap(),
        "the open connection survived the rotation"
    );

    // A broken rotation (key of another certificate) is refused; the last good one serves.
    let other = new_ca.server();
    std::fs::write(certs.path().join("server.key"), &other.key).unwrap();
    let refused = async {
        loop {
            let m = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(new_ca.pem.as_bytes()).unwrap())
                .build()
                .unwrap()
                .get(format!("https://127.0.0.1:{}/metrics", server.metrics_addr.port()))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if m.contains("switchyard_tls_reloads_total{outcome=\"refused\"}") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(WAIT, refused)
        .await
        .expect("the bad certificate was refused");
    infer_both(&server, new).await.unwrap();
    server.shutdown();
    tokio::time::timeout(WAIT, server.wait()).await.unwrap().unwrap();
}
