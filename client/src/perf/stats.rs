//! Server-side statistics over a measurement window: two snapshots of the
//! model's cumulative statistics (gRPC `ModelStatistics` or HTTP `/stats`),
//! summed over the versions the server reports, and their difference.

use serde::Serialize;
use serde_json::Value;

use crate::{ClientError, proto};

/// What the server measured for the model during the reported window
/// (differences of its cumulative statistics). Averages are per request, over
/// the count of each statistic; 0 when nothing was counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerStats {
    /// Successful requests.
    pub request_count: u64,
    /// Failed requests.
    pub failure_count: u64,
    /// Inferences (rows) executed.
    pub inference_count: u64,
    /// Model executions (batches).
    pub execution_count: u64,
    /// `inference_count / execution_count`.
    pub avg_batch_size: f64,
    /// Time from arrival to response, per successful request.
    pub avg_request_us: f64,
    /// Time waiting in the queue.
    pub avg_queue_us: f64,
    /// Time preparing inputs.
    pub avg_compute_input_us: f64,
    /// Time running the model.
    pub avg_compute_infer_us: f64,
    /// Time extracting outputs.
    pub avg_compute_output_us: f64,
}

/// A count and a cumulative duration (`StatisticDuration`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Timed {
    pub(crate) count: u64,
    pub(crate) ns: u64,
}

impl Timed {
    fn add(self, other: Timed) -> Timed {
        Timed {
            count: self.count.saturating_add(other.count),
            ns: self.ns.saturating_add(other.ns),
        }
    }

    fn since(self, earlier: Timed) -> Timed {
        Timed {
            count: self.count.saturating_sub(earlier.count),
            ns: self.ns.saturating_sub(earlier.ns),
        }
    }

    fn avg_us(self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.ns as f64 / self.count as f64 / 1000.0
        }
    }
}

/// The cumulative statistics of a model at one moment, summed over versions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) inference_count: u64,
    pub(crate) execution_count: u64,
    pub(crate) success: Timed,
    pub(crate) fail: Timed,
    pub(crate) queue: Timed,
    pub(crate) compute_input: Timed,
    pub(crate) compute_infer: Timed,
    pub(crate) compute_output: Timed,
}

impl Snapshot {
    fn add(self, o: Snapshot) -> Snapshot {
        Snapshot {
            inference_count: self.inference_count.saturating_add(o.inference_count),
            execution_count: self.execution_count.saturating_add(o.execution_count),
            success: self.success.add(o.success),
            fail: self.fail.add(o.fail),
            queue: self.queue.add(o.queue),
            compute_input: self.compute_input.add(o.compute_input),
            compute_infer: self.compute_infer.add(o.compute_infer),
            compute_output: self.compute_output.add(o.compute_output),
        }
    }

    /// A gRPC `ModelStatisticsResponse`, summed over its entries.
    pub(crate) fn from_proto(resp: &proto::ModelStatisticsResponse) -> Snapshot {
        let d = |d: &Option<proto::StatisticDuration>| {
            d.as_ref()
                .map(|d| Timed {
                    count: d.count,
                    ns: d.ns,
                })
                .unwrap_or_default()
        };
        resp.model_stats
            .iter()
            .map(|m| {
                let s = m.inference_stats.unwrap_or_default();
                Snapshot {
                    inference_count: m.inference_count,
                    execution_count: m.execution_count,
                    success: d(&s.success),
                    fail: d(&s.fail),
                    queue: d(&s.queue),
                    compute_input: d(&s.compute_input),
                    compute_infer: d(&s.compute_infer),
                    compute_output: d(&s.compute_output),
                }
            })
            .fold(Snapshot::default(), Snapshot::add)
    }

    /// An HTTP `/stats` body (`{"model_stats": [...]}`), summed over its
    /// entries. Counters may be JSON numbers or decimal strings.
    pub(crate) fn from_json(body: &Value) -> Result<Snapshot, ClientError> {
        let stats = body
            .get("model_stats")
            .and_then(Value::as_array)
            .ok_or_else(|| ClientError::Decode("statistics without a 'model_stats' array".into()))?;
        fn number(v: Option<&Value>) -> u64 {
            match v {
                Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                Some(Value::String(s)) => s.parse().unwrap_or(0),
                _ => 0,
            }
        }
        Ok(stats
            .iter()
            .map(|m| {
                let d = |key: &str| {
                    let v = m.get("inference_stats").and_then(|s| s.get(key));
                    Timed {
                        count: number(v.and_then(|v| v.get("count"))),
                        ns: number(v.and_then(|v| v.get("ns"))),
                    }
                };
                Snapshot {
                    inference_count: number(m.get("inference_count")),
                    execution_count: number(m.get("execution_count")),
                    success: d("success"),
                    fail: d("fail"),
                    queue: d("queue"),
                    compute_input: d("compute_input"),
                    compute_infer: d("compute_infer"),
                    compute_output: d("compute_output"),
                }
            })
            .fold(Snapshot::default(), Snapshot::add))
    }

    /// What happened between `earlier` and `self`. Counters that went
    /// backwards (a model reloaded in between) count as 0.
    pub(crate) fn since(&self, earlier: &Snapshot) -> ServerStats {
        let inference_count = self.inference_count.saturating_sub(earlier.inference_count);
        let execution_count = self.execution_count.saturating_sub(earlier.execution_count);
        let success = self.success.since(earlier.success);
        ServerStats {
            request_count: success.count,
            failure_count: self.fail.since(earlier.fail).count,
            inference_count,
            execution_count,
            avg_batch_size: if execution_count == 0 {
                0.0
            } else {
                inference_count as f64 / execution_count as f64
            },
            avg_request_us: success.avg_us(),
            avg_queue_us: self.queue.since(earlier.queue).avg_us(),
            avg_compute_input_us: self.compute_input.since(earlier.compute_input).avg_us(),
            avg_compute_infer_us: self.compute_infer.since(earlier.compute_infer).avg_us(),
            avg_compute_output_us: self.compute_output.since(earlier.compute_output).avg_us(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn version_json(version: &str, requests: u64, executions: u64, ns: u64) -> Value {
        let d = |count: u64, ns: u64| json!({"count": count, "ns": ns});
        json!({
            "name": "m", "version": version,
            "inference_count": requests * 2, "execution_count": executions,
            "inference_stats": {
                "success": d(requests, requests * ns * 10),
                "fail": d(requests / 10, 5),
                "queue": d(requests, requests * ns),
                "compute_input": d(requests, requests * ns * 2),
                "compute_infer": d(requests, requests * ns * 5),
                // A string counter, as some servers write 64-bit integers.
                "compute_output": {"count": requests.to_string(), "ns": (requests * ns).to_string()},
            },
        })
    }

    #[test]
    fn deltas_of_two_http_snapshots() {
        let before = json!({"model_stats": [version_json("1", 10, 5, 1000), version_json("2", 0, 0, 0)]});
        let after = json!({"model_stats": [version_json("1", 10, 5, 1000), version_json("2", 100, 40, 2000)]});
        let before = Snapshot::from_json(&before).unwrap();
        let after = Snapshot::from_json(&after).unwrap();
        let s = after.since(&before);
        assert_eq!(s.request_count, 100);
        assert_eq!(s.failure_count, 10);
        assert_eq!((s.inference_count, s.execution_count), (200, 40));
        assert_eq!(s.avg_batch_size, 5.0);
        assert_eq!(s.avg_request_us, 20.0);
        assert_eq!(s.avg_queue_us, 2.0);
        assert_eq!(s.avg_compute_input_us, 4.0);
        assert_eq!(s.avg_compute_infer_us, 10.0);
        assert_eq!(s.avg_compute_output_us, 2.0);
        // No traffic: zeros, not NaN; a reset counter does not underflow.
        assert_eq!(after.since(&after), ServerStats::default());
        assert_eq!(before.since(&after).request_count, 0);
        assert!(Snapshot::from_json(&json!({"error": "x"})).is_err());
    }

    #[test]
    fn huge_counters_saturate() {
        let v = json!({"inference_count": u64::MAX, "inference_stats": {"success": {"count": u64::MAX, "ns": 1}}});
        let s = Snapshot::from_json(&json!({"model_stats": [v.clone(), v]})).unwrap();
        assert_eq!((s.inference_count, s.success.count), (u64::MAX, u64::MAX));
    }

    #[test]
    fn grpc_snapshots_match_http_ones() {
        let d = |count: u64, ns: u64| Some(proto::StatisticDuration { count, ns });
        let model = |requests: u64, ns: u64| proto::ModelStatistics {
            name: "m".into(),
            version: "1".into(),
            inference_count: requests * 2,
            execution_count: requests / 2,
            inference_stats: Some(proto::InferStatistics {
                success: d(requests, requests * ns * 10),
                fail: d(1, 5),
                queue: d(requests, requests * ns),
                compute_input: d(requests, requests * ns * 2),
                compute_infer: d(requests, requests * ns * 5),
                compute_output: d(requests, requests * ns),
                ..Default::default()
            }),
            ..Default::default()
        };
        let at = |requests| proto::ModelStatisticsResponse {
            model_stats: vec![model(requests, 3000)],
        };
        let s = Snapshot::from_proto(&at(50)).since(&Snapshot::from_proto(&at(10)));
        assert_eq!((s.request_count, s.inference_count, s.execution_count), (40, 80, 20));
        assert_eq!(s.avg_batch_size, 4.0);
        assert_eq!(s.avg_queue_us, 3.0);
        assert_eq!(s.avg_compute_infer_us, 15.0);
        let empty = proto::ModelStatisticsResponse::default();
        assert_eq!(Snapshot::from_proto(&empty), Snapshot::default());
    }
}
