//! Dynamic batching end to end: requests from many concurrent clients on both
//! protocols are merged into batches and every response holds exactly its own
//! request's rows.

mod common;

use common::{TestServer, temp_repo};
use switchyard_client::{Data, InferOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_their_own_rows_back_from_shared_batches() {
    let repo = temp_repo(&["simple"]);
    let config = std::fs::read_to_string(repo.path().join("simple/config.pbtxt")).unwrap();
    std::fs::write(
        repo.path().join("simple/config.pbtxt"),
        format!(
            "{config}\ndynamic_batching {{ max_queue_delay_microseconds: 2000 }}\n\
             instance_group [ {{ kind: KIND_CPU, count: 2 }} ]\n"
        ),
    )
    .unwrap();
    let s = TestServer::start(repo.path(), |_| {}).await;
    let mut tasks = Vec::new();
    for client in 0..64i32 {
        let (http, grpc) = (s.http.clone(), s.grpc.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..8i32 {
                let rows = 1 + ((client + round) % 3) as usize;
                let a: Vec<i32> = (0..16 * rows as i32)
                    .map(|i| client * 100_000 + round * 1000 + i)
                    .collect();
                let b: Vec<i32> = (0..16 * rows as i32).map(|i| i * 7 - client).collect();
                let inputs = common::simple_inputs(&a, &b);
                let opts = InferOptions {
                    id: Some(format!("{client}-{round}")),
                    ..Default::default()
                };
                let r = if (client + round) % 2 == 0 {
                    http.infer("simple", &inputs, &opts).await.unwrap()
                } else {
                    grpc.infer("simple", &inputs, &opts).await.unwrap()
                };
                assert_eq!(r.id, format!("{client}-{round}"));
                let sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
                let diff: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
                assert_eq!(
                    r.output("OUTPUT0").unwrap().data,
                    Data::I32(sum),
                    "client {client} round {round}"
                );
                assert_eq!(r.output("OUTPUT1").unwrap().data, Data::I32(diff));
                assert_eq!(r.output("OUTPUT0").unwrap().shape, vec![rows as i64, 16]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = s.grpc.statistics(Some("simple"), Some("2")).await.unwrap();
    let st = &stats.model_stats[0];
    let rows: u64 = (0..64)
        .flat_map(|c| (0..8).map(move |r| 1 + ((c + r) % 3) as u64))
        .sum();
    assert_eq!(st.inference_count, rows);
    assert!(
        st.execution_count < 512,
        "requests were merged: {} executions for 512 requests",
        st.execution_count
    );
    assert!(!st.batch_stats.is_empty());
    for b in &st.batch_stats {
        assert!(
            b.batch_size <= 8,
            "batch of {} rows exceeds max_batch_size 8",
            b.batch_size
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_different_optional_inputs_never_share_a_batch() {
    // `optional`: Z = X + 10 * Y, where X and Y default to zeros. A long queue delay
    // makes concurrent requests wait for one another, so they would merge if allowed.
    let repo = temp_repo(&["optional"]);
    let config = std::fs::read_to_string(repo.path().join("optional/config.pbtxt")).unwrap();
    std::fs::write(
        repo.path().join("optional/config.pbtxt"),
        config.replace(
            "max_queue_delay_microseconds: 100",
            "max_queue_delay_microseconds: 20000",
        ),
    )
    .unwrap();
    let s = TestServer::start(repo.path(), |_| {}).await;
    let mut tasks = Vec::new();
    for client in 0..32i32 {
        let (http, grpc) = (s.http.clone(), s.grpc.clone());
        tasks.push(tokio::spawn(async move {
            let row: Vec<f32> = (0..4).map(|i| (client * 4 + i) as f32).collect();
            // Even clients send only X, odd ones only Y; both protocols.
            let name = if client % 2 == 0 { "X" } else { "Y" };
            let inputs = vec![switchyard_client::Tensor::new(name, vec![1, 4], Data::F32(row.clone()))];
            let opts = InferOptions::default();
            let r = if client % 4 < 2 {
                http.infer("optional", &inputs, &opts).await.unwrap()
            } else {
                grpc.infer("optional", &inputs, &opts).await.unwrap()
            };
            let expected: Vec<f32> = row
                .iter()
                .map(|v| if client % 2 == 0 { *v } else { v * 10.0 })
                .collect();
            let z = r.output("Z").unwrap();
            assert_eq!(z.shape, vec![1, 4], "client {client}");
            assert_eq!(z.data, Data::F32(expected), "client {client} sent only {name}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = s.grpc.statistics(Some("optional"), None).await.unwrap();
    let st = &stats.model_stats[0];
    assert_eq!(st.inference_count, 32);
    assert!(
        st.execution_count < 32,
        "requests with the same inputs still merged: {} executions",
        st.execution_count
    );
    // With every input optional, a request still has to send one: rows come from it.
    let opts = InferOptions::default();
    let http = s.http.infer("optional", &[], &opts).await.unwrap_err().to_string();
    let grpc = s.grpc.infer("optional", &[], &opts).await.unwrap_err().to_string();
    for e in [http, grpc] {
        assert!(e.contains("the request has no inputs"), "{e}");
    }
    s.stop().await;
}
