//! Model cards: `model_card.md` / `model_card.json` beside the versions,
//! served at `GET /v2/models/{m}/card`, summarised in metadata properties on
//! both protocols, audited with their digest, picked up by a polling server
//! (an invalid card keeps the previous one), and checked by `switchyard
//! validate` (`--require-model-card`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, WAIT, temp_repo, validate_with};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchyard::config::ControlMode;

const MD: &str = "# Simple adder\n\nAdds and subtracts.\n\n## Intended use\nTesting the server.\nNothing else.\n\n\
                  ## Limitations\nIntegers only.\n\n## Owners\n- team-a\n- team-b\n";

fn write_card(repo: &Path, file: &str, text: &str) {
    std::fs::write(repo.join("simple").join(file), text).unwrap();
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn card_status(s: &TestServer, model: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{}/v2/models/{model}/card", s.server.http_addr))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_markdown_card_is_served_summarised_and_audited() {
    let repo = temp_repo(&["simple"]);
    write_card(repo.path(), "model_card.md", MD);
    let audit = repo.path().join("audit.jsonl");
    let audit_path = audit.clone();
    let s = TestServer::start(repo.path(), move |c| c.audit_log = Some(audit_path)).await;

    let card = s.http.model_card("simple").await.unwrap();
    assert_eq!(card["model"], "simple");
    assert_eq!(card["format"], "markdown");
    assert_eq!(card["sha256"], sha(MD));
    assert_eq!(card["title"], "Simple adder");
    assert_eq!(card["sections"]["intended_use"], "Testing the server.\nNothing else.");
    assert_eq!(card["sections"]["limitations"], "Integers only.");
    assert_eq!(card["owners"], serde_json::json!(["team-a", "team-b"]));
    assert_eq!(
        card["missing"],
        serde_json::json!(["training_data", "evaluation", "fairness_evaluation"])
    );
    assert_eq!(card["content"], MD);

    let meta = s.http.model_metadata("simple", None).await.unwrap();
    let props = &meta["parameters"];
    assert_eq!(props["model_card_sha256"], sha(MD), "{meta}");
    assert_eq!(props["model_card_title"], "Simple adder");
    assert_eq!(props["model_card_owners"], "team-a,team-b");
    assert_eq!(props["model_card_intended_use"], "Testing the server.");
    let grpc = s.grpc.model_metadata("simple", None).await.unwrap();
    assert_eq!(grpc.properties.get("model_card_sha256"), Some(&sha(MD)));
    assert_eq!(
        grpc.properties.get("model_card_owners").map(String::as_str),
        Some("team-a,team-b")
    );

    let lines = audit_lines(&audit);
    let line = lines
        .iter()
        .find(|l| l["action"] == "model_card")
        .expect("the card is audited");
    assert_eq!(line["model"], "simple");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["digest"], sha(MD));
    assert!(line["reason"].as_str().unwrap().contains("model_card.md"), "{line}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_cards_and_models_without_one() {
    let repo = temp_repo(&["simple"]);
    let json = r#"{"title": "Adder", "intended_use": "tests", "owners": "ops", "evaluation": "golden set",
                   "license": "Apache-2.0"}"#;
    write_card(repo.path(), "model_card.json", json);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let (status, card) = card_status(&s, "simple").await;
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["format"], "json");
    assert_eq!(card["sha256"], sha(json));
    assert_eq!(card["owners"], serde_json::json!(["ops"]));
    assert_eq!(card["sections"]["evaluation"], "golden set");
    assert_eq!(card["other"]["license"], "Apache-2.0");
    assert_eq!(card["content"], json);

    let (status, body) = card_status(&s, "nope").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    s.stop().await;

    // No card: 404 naming what to add, and no card properties.
    std::fs::remove_file(repo.path().join("simple/model_card.json")).unwrap();
    let s = TestServer::start(repo.path(), |_| {}).await;
    let (status, body) = card_status(&s, "simple").await;
    assert_eq!(status, 404);
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("no model card") && e.contains("model_card.md"), "{body}");
    let meta = s.http.model_metadata("simple", None).await.unwrap();
    assert!(meta["parameters"].get("model_card_sha256").is_none(), "{meta}");
    s.stop().await;

    // Both files: refused, naming both; the versions serve anyway.
    write_card(repo.path(), "model_card.md", MD);
    write_card(repo.path(), "model_card.json", json);
    let s = TestServer::start(repo.path(), |_| {}).await;
    let index = s.http.repository_index(false).await.unwrap().to_string();
    assert!(
        index.contains("model_card.md") && index.contains("model_card.json"),
        "{index}"
    );
    assert_eq!(card_status(&s, "simple").await.0, 404);
    common::assert_still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_picks_up_a_changed_card_and_an_invalid_one_keeps_the_previous() {
    let repo = temp_repo(&["simple"]);
    write_card(repo.path(), "model_card.md", MD);
    let audit = repo.path().join("audit.jsonl");
    let audit_path = audit.clone();
    let s = TestServer::start(repo.path(), move |c| {
        c.model_control_mode = ControlMode::Poll;
        c.repository_poll_secs = 1;
        c.audit_log = Some(audit_path);
    })
    .await;
    assert_eq!(s.http.model_card("simple").await.unwrap()["sha256"], sha(MD));

    let changed = format!("{MD}\n## Evaluation\nGolden set.\n");
    write_card(repo.path(), "model_card.md", &changed);
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.http.model_card("simple").await.unwrap()["sha256"] != sha(&changed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changed card was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let card = s.http.model_card("simple").await.unwrap();
    assert_eq!(card["sections"]["evaluation"], "Golden set.");
    assert!(
        audit_lines(&audit)
            .iter()
            .any(|l| l["action"] == "model_card" && l["digest"] == sha(&changed)),
        "the change is audited with its digest"
    );

    // Invalid (two Owners sections): reported, and the previous card keeps being served.
    write_card(repo.path(), "model_card.md", &format!("{changed}\n## Owners\n- c\n"));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let index = s.http.repository_index(false).await.unwrap().to_string();
        if index.contains("appears twice") {
            assert!(index.contains("model_card.md"), "{index}");
            assert!(index.contains("previous model card keeps being served"), "{index}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invalid card was not reported: {index}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.http.model_card("simple").await.unwrap()["sha256"], sha(&changed));
    let meta = s.http.model_metadata("simple", None).await.unwrap();
    assert_eq!(meta["parameters"]["model_card_sha256"], sha(&changed));
    assert!(
        audit_lines(&audit)
            .iter()
            .any(|l| l["action"] == "model_card" && l["outcome"] == "failed"),
        "the refusal is audited"
    );
    common::assert_still_serving(&s).await;
    s.stop().await;
}

#[test]
fn validate_can_require_a_card_and_fails_an_invalid_one() {
    let repo = temp_repo(&["simple"]);
    let (ok, report) = validate_with(repo.path(), &["--require-model-card"]);
    assert!(!ok, "{report}");
    assert!(report.contains("no model card"), "{report}");
    let (ok, report) = validate_with(repo.path(), &[]);
    assert!(ok, "without the flag a card is optional: {report}");

    write_card(repo.path(), "model_card.md", MD);
    let (ok, report) = validate_with(repo.path(), &["--require-model-card"]);
    assert!(ok, "{report}");
    let want = format!(
        "model_card: model_card.md sha256 {}, sections intended_use, limitations, owners",
        sha(MD)
    );
    assert!(report.contains(&want), "{report}");
    assert!(
        report.contains("missing recommended sections: training_data, evaluation, fairness_evaluation"),
        "{report}"
    );

    std::fs::remove_file(repo.path().join("simple/model_card.md")).unwrap();
    write_card(repo.path(), "model_card.json", r#"{"owners": 7}"#);
    let (ok, report) = validate_with(repo.path(), &[]);
    assert!(!ok, "an invalid card fails without the flag: {report}");
    assert!(
        report.contains("model_card.json") && report.contains("field `owners`"),
        "{report}"
    );
}

#[test]
fn the_example_cards_pass_validation() {
    let repo = temp_repo(&["classifier", "credit"]);
    let (ok, report) = validate_with(repo.path(), &["--require-model-card"]);
    assert!(ok, "{report}");
    assert_eq!(
        report.matches("model_card: model_card.md sha256").count(),
        2,
        "{report}"
    );
    assert!(
        !report.contains("missing recommended"),
        "the examples are complete: {report}"
    );
}
