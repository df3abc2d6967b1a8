//! Mirrored traffic behind a real load balancer: Debian's nginx (installed by
//! `scripts/setup-system.sh`) on a loopback port proxies HTTP to a primary
//! server and mirrors every request (`mirror` directive) to a shadow target
//! with a `-shadow` Host. The shadow labels what it receives; the primary's
//! answers are unaffected, also when the shadow fails every request or never
//! answers.
//!
//! Both servers run in this process and share its metrics recorder, so the
//! per-server split is read from each server's statistics (Triton's counts and
//! the `shadow_*_count` properties); /metrics shows the `traffic` labels.
//!
//! What this does not show: latency. nginx sends the primary's answer without
//! waiting for the mirror, but finishes the request (and reads the next one on
//! the same keep-alive connection) only once the mirror subrequest is done, so
//! a slow shadow delays later requests on that connection by up to the mirror
//! location's timeouts. That is a benchmark matter; nothing here times requests.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, WAIT, simple_inputs, temp_repo};
use prometheus_parse::{Scrape, Value as PromValue};
use switchyard_client::{Data, HttpClient, InferOptions};

const NGINX: &str = "/usr/sbin/nginx";
/// Requests sent through nginx per phase.
const N: u64 = 6;

/// An nginx process on a loopback port, killed when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, port: u16, primary: SocketAddr, shadow: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 16m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            mirror /mirror;
            mirror_request_body on;
            proxy_http_version 1.1;
            proxy_pass http://{primary};
        }}
        location = /mirror {{
            internal;
            proxy_http_version 1.1;
            proxy_connect_timeout 1s;
            proxy_send_timeout 1s;
            proxy_read_timeout 1s;
            proxy_set_header Host shadow-target-shadow;
            proxy_pass http://{shadow}$request_uri;
        }}
    }}
}}
"#
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Nginx {
    /// Starts nginx in front of `primary`, mirroring to `shadow`; retries on
    /// another port when the one picked was taken meanwhile.
    fn start(primary: SocketAddr, shadow: SocketAddr) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: this test needs Debian's nginx. Install it with \
             `bash scripts/setup-system.sh` (or `apt-get install -y nginx-light`; \
             `apt-get update` first on a fresh machine)"
        );
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), port, primary, shadow)).unwrap();
            let child = Command::new(NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let mut nginx = Nginx { child, port, dir };
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    last = format!("nginx exited ({status}): {}", nginx.log());
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return nginx;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if Instant::now() >= deadline {
                panic!("nginx did not listen on {port} in time: {}", nginx.log());
            }
        }
        panic!("nginx did not start: {last}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn client(&self) -> HttpClient {
        HttpClient::new(&format!("http://127.0.0.1:{}", self.port)).unwrap()
    }
}

/// Sends `N` requests through nginx; every answer must be the primary's, correct.
async fn send_through(nginx: &Nginx, phase: &str) {
    let client = nginx.client();
    for i in 0..N as i32 {
        let a: Vec<i32> = (0..16).map(|k| k * i).collect();
        let b = vec![i; 16];
        let want: Vec<i32> = a.iter().map(|x| x + i).collect();
        let r = client
            .infer("simple", &simple_inputs(&a, &b), &InferOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{phase}: request {i} through nginx failed: {e}\n{}", nginx.log()));
        assert_eq!(
            r.output("OUTPUT0").unwrap().data,
            Data::I32(want),
            "{phase}: request {i}"
        );
    }
}

/// (success, fail, shadow success, shadow fail) of `simple` on `s`.
fn counts(s: &TestServer) -> (u64, u64, u64, u64) {
    let stats = s.server.service.model_statistics("simple", None).unwrap();
    let (mut ok, mut fail, mut sok, mut sfail) = (0, 0, 0, 0);
    for st in stats {
        let inf = st.inference_stats.unwrap();
        ok += inf.success.unwrap().count;
        fail += inf.fail.unwrap().count;
        sok += st.properties["shadow_success_count"].parse::<u64>().unwrap();
        sfail += st.properties["shadow_fail_count"].parse::<u64>().unwrap();
    }
    (ok, fail, sok, sfail)
}

async fn requests_total(s: &TestServer, labels: &[(&str, &str)]) -> f64 {
    let url = format!("http://{}/metrics", s.server.metrics_addr);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "switchyard_inference_requests_total")
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            PromValue::Counter(x) | PromValue::Untyped(x) => x,
            _ => 0.0,
        })
        .sum()
}

/// Waits (bounded) until `f` holds: the mirror subrequest finishes after the
/// primary's answer has reached the client.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "{what} in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_mirror_labels_the_shadow_and_leaves_the_primary_alone() {
    let repo = temp_repo(&["simple"]);
    let primary = TestServer::start(repo.path(), |_| {}).await;
    let shadow_repo = temp_repo(&["simple"]);
    let shadow = TestServer::start(shadow_repo.path(), |_| {}).await;

    // 1. A working shadow: it counts every request as shadow, the primary as production.
    let shadow_before = requests_total(&primary, &[("model", "simple"), ("traffic", "shadow")]).await;
    let nginx = Nginx::start(primary.server.http_addr, shadow.server.http_addr);
    send_through(&nginx, "working shadow").await;
    eventually("the shadow saw every mirrored request", || counts(&shadow).2 == N).await;
    assert_eq!(counts(&primary), (N, 0, 0, 0), "the primary counts production only");
    assert_eq!(counts(&shadow), (0, 0, N, 0), "the shadow counts shadow only");
    let shadow_after = requests_total(&primary, &[("model", "simple"), ("traffic", "shadow")]).await;
    assert_eq!(shadow_after - shadow_before, N as f64, "traffic=\"shadow\" in /metrics");
    drop(nginx);

    // 2. A shadow that fails every request (it has no model): the primary still answers all.
    let empty = tempfile::tempdir().unwrap();
    let failing = TestServer::start(empty.path(), |_| {}).await;
    let unrouted = [("model", ""), ("traffic", "shadow")];
    let failed_before = requests_total(&failing, &unrouted).await;
    let nginx = Nginx::start(primary.server.http_addr, failing.server.http_addr);
    send_through(&nginx, "failing shadow").await;
    let deadline = Instant::now() + WAIT;
    while requests_total(&failing, &unrouted).await - failed_before < N as f64 {
        assert!(
            Instant::now() < deadline,
            "the failing shadow saw every mirrored request in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts(&primary), (2 * N, 0, 0, 0), "every primary answer succeeded");
    drop(nginx);

    // 3. A shadow that never answers (accepts and holds the connection; nginx gives up after 1 s).
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in hole.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let nginx = Nginx::start(primary.server.http_addr, hole_addr);
    send_through(&nginx, "silent shadow").await;
    eventually("the silent shadow was sent every request", || {
        held.lock().unwrap().len() as u64 >= N
    })
    .await;
    assert_eq!(counts(&primary), (3 * N, 0, 0, 0), "every primary answer succeeded");
    drop(nginx);

    failing.stop().await;
    shadow.stop().await;
    primary.stop().await;
}
