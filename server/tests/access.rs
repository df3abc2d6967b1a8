//! Access control per API group through real clients: Triton's restricted
//! APIs (`--http-restricted-api`, `--grpc-restricted-protocol`) and per-group
//! bearer tokens (`--api-token-file`).

mod common;

use common::{TestServer, simple_inputs, temp_repo};
use switchyard::access::{HeaderRestriction, TokenFile};
use switchyard_client::{ClientError, Data, GrpcClient, HttpClient, InferOptions};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const INFER_VALUE: &str = "infer-secret-value";
const ADMIN_VALUE: &str = "admin-secret-value";
const GRPC_INFER_HEADER: &str = "triton-grpc-protocol-infer-key";

fn http_error(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Http { status, message } => (status, message),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

fn grpc_error(e: ClientError) -> (tonic::Code, String) {
    match e {
        ClientError::Grpc { code, message } => (code, message),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

/// `name{labels} value` lines of the metrics page, summed over matching series.
async fn auth_failures(s: &TestServer, protocol: &str, group: &str, reason: &str) -> f64 {
    let url = format!("http://{}/metrics", s.server.metrics_addr);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("switchyard_auth_failures_total{"))
        .filter(|l| {
            l.contains(&format!("protocol=\"{protocol}\""))
                && l.contains(&format!("group=\"{group}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn infer_sum(http: Option<&HttpClient>, grpc: Option<&GrpcClient>) -> Result<Vec<i32>, ClientError> {
    let a: Vec<i32> = (0..16).collect();
    let inputs = simple_inputs(&a, &[1; 16]);
    let opts = InferOptions::default();
    let r = match (http, grpc) {
        (Some(h), _) => h.infer("simple", &inputs, &opts).await?,
        (_, Some(g)) => g.infer("simple", &inputs, &opts).await?,
        _ => unreachable!(),
    };
    match &r.output("OUTPUT0").unwrap().data {
        Data::I32(v) => Ok(v.clone()),
        other => panic!("unexpected output {other:?}"),
    }
}

async fn health_client(s: &TestServer) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_groups_need_their_header_and_the_rest_stays_open() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |c| {
        c.http_restricted_api = vec![
            HeaderRestriction::parse_http(&format!("inference:infer-key={INFER_VALUE}")).unwrap(),
            HeaderRestriction::parse_http(&format!(
                "model-config,model-repository,statistics:admin-key={ADMIN_VALUE}"
            ))
            .unwrap(),
        ];
        c.grpc_restricted_protocol = vec![
            HeaderRestriction::parse_grpc(&format!("inference:infer-key={INFER_VALUE}")).unwrap(),
            HeaderRestriction::parse_grpc(&format!(
                "model-config,model-repository,statistics,shared-memory:admin-key={ADMIN_VALUE}"
            ))
            .unwrap(),
        ];
    })
    .await;
    let want: Vec<i32> = (1..17).collect();

    // HTTP: refused without the header and with a wrong value; 403 and Triton's message.
    let before = auth_failures(&s, "http", "inference", "missing_header").await;
    let (status, message) = http_error(infer_sum(Some(&s.http), None).await.unwrap_err());
    assert_eq!(status, 403);
    assert_eq!(message, "This API is restricted, expecting header 'infer-key'");
    assert_eq!(
        auth_failures(&s, "http", "inference", "missing_header").await,
        before + 1.0
    );
    let wrong = s.http.clone().with_header("infer-key", "not-the-value").unwrap();
    assert_eq!(http_error(infer_sum(Some(&wrong), None).await.unwrap_err()).0, 403);
    assert!(auth_failures(&s, "http", "inference", "wrong_header").await >= 1.0);
    // The body is JSON with Triton's `error` field.
    let (status, body) = s.http.get_raw("/v2/models/simple/stats").await.unwrap();
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "This API is restricted, expecting header 'admin-key'");

    // Served with the right header (header names are case-insensitive).
    let app = s.http.clone().with_header("Infer-Key", INFER_VALUE).unwrap();
    assert_eq!(infer_sum(Some(&app), None).await.unwrap(), want);
    // One group's header does not open another group.
    assert_eq!(http_error(app.model_config("simple", None).await.unwrap_err()).0, 403);
    assert_eq!(
        http_error(app.labels("simple").await.unwrap_err()).0,
        403,
        "labels: model-repository"
    );
    assert_eq!(http_error(app.repository_index(false).await.unwrap_err()).0, 403);
    let (status, _) = s.http.get_raw("/v2/models/simple/drift").await.unwrap();
    assert_eq!(status, 403, "drift: statistics");
    let admin = s.http.clone().with_header("admin-key", ADMIN_VALUE).unwrap();
    admin.model_config("simple", None).await.unwrap();
    admin.statistics(Some("simple"), None).await.unwrap();
    admin.repository_index(false).await.unwrap();
    admin.labels("simple").await.unwrap();

    // Unrestricted groups and health stay open without any header.
    assert!(s.http.live().await.unwrap());
    assert!(s.http.ready().await.unwrap());
    assert!(s.http.model_ready("simple", None).await.unwrap());
    s.http.server_metadata().await.unwrap();
    s.http.model_metadata("simple", None).await.unwrap();
    // Unknown paths are still 404, not 403.
    assert_eq!(s.http.get_raw("/v2/nothing/here").await.unwrap().0, 404);

    // gRPC: UNAVAILABLE with Triton's message, served with the prefixed header.
    let before = auth_failures(&s, "grpc", "inference", "missing_header").await;
    let (code, message) = grpc_error(infer_sum(None, Some(&s.grpc)).await.unwrap_err());
    assert_eq!(code, tonic::Code::Unavailable);
    assert_eq!(
        message,
        "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'"
    );
    assert_eq!(
        auth_failures(&s, "grpc", "inference", "missing_header").await,
        before + 1.0
    );
    let wrong = s.grpc.clone().with_header(GRPC_INFER_HEADER, "nope").unwrap();
    assert_eq!(
        grpc_error(infer_sum(None, Some(&wrong)).await.unwrap_err()).0,
        tonic::Code::Unavailable
    );
    // The HTTP header name alone does not count on gRPC.
    let http_style = s.grpc.clone().with_header("infer-key", INFER_VALUE).unwrap();
    assert!(infer_sum(None, Some(&http_style)).await.is_err());
    let app = s.grpc.clone().with_header(GRPC_INFER_HEADER, INFER_VALUE).unwrap();
    assert_eq!(infer_sum(None, Some(&app)).await.unwrap(), want);
    let (code, message) = grpc_error(app.statistics(Some("simple"), None).await.unwrap_err());
    assert_eq!(code, tonic::Code::Unavailable);
    assert!(message.contains("triton-grpc-protocol-admin-key"), "{message}");
    let admin = s
        .grpc
        .clone()
        .with_header("triton-grpc-protocol-admin-key", ADMIN_VALUE)
        .unwrap();
    admin.statistics(Some("simple"), None).await.unwrap();
    admin.model_config("simple", None).await.unwrap();
    admin.repository_index(false).await.unwrap();
    assert!(s.grpc.live().await.unwrap());
    assert!(s.grpc.ready().await.unwrap());
    assert!(s.grpc.model_ready("simple", None).await.unwrap());
    s.grpc.server_metadata().await.unwrap();
    let mut health = health_client(&s).await;
    let serving = health.check(HealthCheckRequest::default()).await.unwrap().into_inner();
    assert_eq!(serving.status, 1, "grpc.health.v1 stays open: SERVING");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_closed_only_when_restricted() {
    let repo = temp_repo(&["simple"]);
    let s = TestServer::start(repo.path(), |c| {
        c.http_restricted_api = vec![HeaderRestriction::parse_http("health:probe-key=probe-secret").unwrap()];
        c.grpc_restricted_protocol = vec![HeaderRestriction::parse_grpc("health:probe-key=probe-secret").unwrap()];
    })
    .await;
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/simple/ready"] {
        let (status, body) = s.http.get_raw(path).await.unwrap();
        assert_eq!(status, 403, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "This API is restricted, expecting header 'probe-key'");
    }
    assert!(!s.http.live().await.unwrap());
    let probe = s.http.clone().with_header("probe-key", "probe-secret").unwrap();
    assert!(probe.ready().await.unwrap());
    assert_eq!(
        grpc_error(s.grpc.ready().await.unwrap_err()).0,
        tonic::Code::Unavailable
    );
    let mut health = health_client(&s).await;
    let e = health.check(HealthCheckRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("triton-grpc-protocol-probe-key", "probe-secret".parse().unwrap());
    assert_eq!(health.check(request).await.unwrap().into_inner().status, 1);
    // Other groups stay open.
    common::assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_tokens_are_checked_and_name_the_actor() {
    let repo = temp_repo(&["simple"]);
    let tokens = repo.path().join("api-tokens");
    std::fs::write(&tokens, "# deployers\ndeployer:deploy-token-0123456789\n").unwrap();
    let infer_tokens = repo.path().join("infer-tokens");
    std::fs::write(&infer_tokens, "app:app-token-0123456789abc\n").unwrap();
    let audit = repo.path().join("audit.jsonl");
    let files = vec![
        TokenFile::parse(&format!("model-repository:{}", tokens.display())).unwrap(),
        TokenFile::parse(&format!("inference:{}", infer_tokens.display())).unwrap(),
    ];
    let audit_path = audit.clone();
    let s = TestServer::start(repo.path(), move |c| {
        c.model_control_mode = switchyard::config::ControlMode::Explicit;
        c.load_models = vec!["simple".into()];
        c.api_token_files = files;
        c.audit_log = Some(audit_path);
    })
    .await;

    let before = auth_failures(&s, "http", "model-repository", "missing_token").await;
    let (status, message) = http_error(s.http.set_label("simple", "stable", "1").await.unwrap_err());
    assert_eq!(status, 401);
    assert_eq!(
        message,
        "the 'model-repository' API needs 'Authorization: Bearer <token>'"
    );
    assert_eq!(
        auth_failures(&s, "http", "model-repository", "missing_token").await,
        before + 1.0
    );
    // A token of another group's file is not valid here.
    let app = s.http.clone().with_admin_token("app-token-0123456789abc");
    let (status, message) = http_error(app.set_label("simple", "stable", "1").await.unwrap_err());
    assert_eq!(status, 401);
    assert_eq!(message, "invalid token for the 'model-repository' API");
    assert!(auth_failures(&s, "http", "model-repository", "invalid_token").await >= 1.0);
    assert_eq!(infer_sum(Some(&app), None).await.unwrap(), (1..17).collect::<Vec<_>>());
    assert_eq!(http_error(infer_sum(Some(&s.http), None).await.unwrap_err()).0, 401);

    let deployer = s.http.clone().with_admin_token("deploy-token-0123456789");
    deployer.set_label("simple", "stable", "1").await.unwrap();
    let (code, _) = grpc_error(s.grpc.unload_model("simple").await.unwrap_err());
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(auth_failures(&s, "grpc", "model-repository", "missing_token").await >= 1.0);
    let grpc_deployer = s.grpc.clone().with_admin_token("deploy-token-0123456789");
    grpc_deployer.unload_model("simple").await.unwrap();
    // Unrestricted groups stay open.
    assert!(s.http.live().await.unwrap());
    s.http.server_metadata().await.unwrap();
    s.http.statistics(None, None).await.unwrap();

    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("0123456789"), "tokens never reach the audit log");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let label = lines.iter().find(|l| l["action"] == "label").expect("label audited");
    assert_eq!(label["actor"], "token:deployer");
    let unload = lines.iter().find(|l| l["action"] == "unload").expect("unload audited");
    assert_eq!(unload["actor"], "token:deployer");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_in_two_restrictions_does_not_start() {
    let repo = temp_repo(&["simple"]);
    let mut config = switchyard::Config::for_repository(repo.path());
    config.http_restricted_api = vec![
        HeaderRestriction::parse_http("model-repository,health:k1=v1").unwrap(),
        HeaderRestriction::parse_http("metadata,health:k2=v2").unwrap(),
    ];
    let err = switchyard::Server::start(config).await.unwrap_err().to_string();
    assert!(
        err.contains("restricted api 'health' can not be specified in multiple config groups"),
        "{err}"
    );
}
