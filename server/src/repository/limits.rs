//! Upper bounds on every `config.pbtxt` number that sizes threads, memory or
//! time. A config may come from the repository or from the load API's
//! `config` parameter, so a number is never trusted to be sane: beyond its
//! bound the config is refused with a message naming the field, before any
//! thread is started or any buffer is sized from it. Documented in the
//! README's config table.

use switchyard_proto::inference::{ModelConfig, ModelQueuePolicy, model_config};

/// Executor instances (sessions, each a thread) a version may have.
pub const MAX_INSTANCES: i64 = 64;
/// ONNX Runtime intra-op or inter-op threads one session may have.
pub const MAX_SESSION_THREADS: i64 = 256;
/// `max_batch_size` at most.
pub const MAX_BATCH_SIZE: i64 = 1 << 16;
/// `max_queue_delay_microseconds` at most (10 s).
pub const MAX_QUEUE_DELAY_US: u64 = 10_000_000;
/// Priority levels a config may declare.
pub const MAX_PRIORITY_LEVELS: u64 = 16;
/// `max_queue_size` at most, per priority level.
pub const MAX_QUEUE_SIZE: u64 = 1 << 20;
/// Queue timeouts at most, in the config and in a request's `timeout` parameter (1 h).
pub const MAX_TIMEOUT_US: u64 = 3_600_000_000;
/// `model_warmup` entries at most.
pub const MAX_WARMUPS: usize = 64;
/// Dimensions of one tensor at most.
pub const MAX_DIMS: usize = 32;

/// Checks `config` against the bounds; the error names the field.
pub fn check(config: &ModelConfig) -> Result<(), String> {
    if config.max_batch_size > MAX_BATCH_SIZE as i32 {
        return Err(above("max_batch_size", config.max_batch_size, MAX_BATCH_SIZE));
    }
    let mut instances = 0i64;
    for (i, group) in config.instance_group.iter().enumerate() {
        if i64::from(group.count) > MAX_INSTANCES {
            return Err(above(&format!("instance_group[{i}].count"), group.count, MAX_INSTANCES));
        }
        instances += i64::from(group.count.max(1));
    }
    if instances > MAX_INSTANCES {
        return Err(format!(
            "instance_group: {instances} instances in all is above the limit of {MAX_INSTANCES}"
        ));
    }
    for key in ["intra_op_thread_count", "inter_op_thread_count"] {
        if let Some(p) = config.parameters.get(key) {
            let v = p.string_value.trim();
            match v.parse::<i64>() {
                Ok(n) if (0..=MAX_SESSION_THREADS).contains(&n) => {}
                Ok(n) => {
                    return Err(format!(
                        "parameters.{key} is {n}: it must be in 0..={MAX_SESSION_THREADS} (0 = the default)"
                    ));
                }
                Err(_) => return Err(format!("parameters.{key} must be an integer, got '{}'", clip(v))),
            }
        }
    }
    // The batcher's delay rule (batching::policy::Delay); checked here so that `validate` sees it.
    if let Some(p) = config.parameters.get("dynamic_batching_delay")
        && !matches!(p.string_value.trim(), "adaptive" | "fixed")
    {
        let v = clip(p.string_value.trim());
        return Err(format!(
            "parameters.dynamic_batching_delay must be 'adaptive' or 'fixed', got '{v}'"
        ));
    }
    for (what, tensors) in [
        (
            "input",
            config.input.iter().map(|t| (&t.name, &t.dims)).collect::<Vec<_>>(),
        ),
        ("output", config.output.iter().map(|t| (&t.name, &t.dims)).collect()),
    ] {
        for (i, (name, dims)) in tensors.into_iter().enumerate() {
            if dims.len() > MAX_DIMS {
                return Err(format!(
                    "{what}[{i}] '{}': {} dims is above the limit of {MAX_DIMS}",
                    clip(name),
                    dims.len()
                ));
            }
            if let Some(d) = dims.iter().find(|&&d| d < -1) {
                return Err(format!(
                    "{what}[{i}] '{}': dim {d} is invalid (-1 = variable)",
                    clip(name)
                ));
            }
        }
    }
    if let Some(model_config::SchedulingChoice::DynamicBatching(d)) = &config.scheduling_choice {
        for (i, &p) in d.preferred_batch_size.iter().enumerate() {
            if p <= 0 || (config.max_batch_size > 0 && p > config.max_batch_size) {
                return Err(format!(
                    "dynamic_batching.preferred_batch_size[{i}] is {p}: it must be in 1..=max_batch_size ({})",
                    config.max_batch_size
                ));
            }
        }
        if d.max_queue_delay_microseconds > MAX_QUEUE_DELAY_US {
            return Err(above(
                "dynamic_batching.max_queue_delay_microseconds",
                d.max_queue_delay_microseconds,
                MAX_QUEUE_DELAY_US,
            ));
        }
        if d.priority_levels > MAX_PRIORITY_LEVELS {
            return Err(above(
                "dynamic_batching.priority_levels",
                d.priority_levels,
                MAX_PRIORITY_LEVELS,
            ));
        }
        let levels = d.priority_levels.max(1);
        if d.default_priority_level > levels {
            return Err(format!(
                "dynamic_batching.default_priority_level {} is above priority_levels ({levels})",
                d.default_priority_level
            ));
        }
        if let Some(q) = &d.default_queue_policy {
            check_queue_policy("dynamic_batching.default_queue_policy", q)?;
        }
        for (level, q) in &d.priority_queue_policy {
            if *level == 0 || *level > levels {
                return Err(format!(
                    "dynamic_batching.priority_queue_policy: level {level} is not in 1..={levels} (priority_levels)"
                ));
            }
            check_queue_policy(&format!("dynamic_batching.priority_queue_policy[{level}]"), q)?;
        }
    }
    if config.model_warmup.len() > MAX_WARMUPS {
        return Err(format!(
            "model_warmup: {} entries is above the limit of {MAX_WARMUPS}",
            config.model_warmup.len()
        ));
    }
    Ok(())
}

/// Checks a request's `timeout` parameter (microseconds).
pub fn check_request_timeout(us: u64) -> Result<(), String> {
    if us > MAX_TIMEOUT_US {
        Err(format!(
            "parameter 'timeout' is {us} µs: it must be at most {MAX_TIMEOUT_US} (1 hour)"
        ))
    } else {
        Ok(())
    }
}

fn check_queue_policy(field: &str, q: &ModelQueuePolicy) -> Result<(), String> {
    if u64::from(q.max_queue_size) > MAX_QUEUE_SIZE {
        return Err(format!(
            "{field}.max_queue_size is {}: it must be in 0..={MAX_QUEUE_SIZE}",
            q.max_queue_size
        ));
    }
    if q.default_timeout_microseconds > MAX_TIMEOUT_US {
        return Err(above(
            &format!("{field}.default_timeout_microseconds"),
            q.default_timeout_microseconds,
            MAX_TIMEOUT_US,
        ));
    }
    Ok(())
}

fn above(field: &str, value: impl std::fmt::Display, limit: impl std::fmt::Display) -> String {
    format!("{field} is {value}, above the limit of {limit}")
}

/// A value quoted in an error, cut to a readable length.
pub fn clip(s: &str) -> String {
    crate::error::clip(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::config::parse_text;

    fn refused(text: &str, field: &str) {
        let c = parse_text(text).unwrap();
        let e = check(&c).unwrap_err();
        assert!(e.contains(field), "{text}: {e}");
    }

    #[test]
    fn bounds_name_the_field() {
        refused(
            r#"parameters { key: "intra_op_thread_count" value { string_value: "100000" } }"#,
            "parameters.intra_op_thread_count",
        );
        refused(
            r#"parameters { key: "inter_op_thread_count" value { string_value: "-3" } }"#,
            "parameters.inter_op_thread_count",
        );
        refused(
            r#"parameters { key: "dynamic_batching_delay" value { string_value: "blind" } }"#,
            "parameters.dynamic_batching_delay",
        );
        refused(r#"instance_group [{ count: 10000 }]"#, "instance_group[0].count");
        refused(r#"instance_group [{ count: 40 }, { count: 40 }]"#, "instance_group");
        refused(
            "max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 4611686018427387904 }",
            "max_queue_delay_microseconds",
        );
        refused(
            "max_batch_size: 8 dynamic_batching { preferred_batch_size: [4, 16] }",
            "preferred_batch_size[1]",
        );
        refused(
            "max_batch_size: 8 dynamic_batching { priority_levels: 4611686018427387904 }",
            "priority_levels",
        );
        refused(
            "max_batch_size: 8 dynamic_batching { priority_levels: 2 default_priority_level: 3 }",
            "default_priority_level",
        );
        refused(
            "max_batch_size: 8 dynamic_batching { default_queue_policy { max_queue_size: 4294967295 } }",
            "default_queue_policy.max_queue_size",
        );
        refused(
            "max_batch_size: 8 dynamic_batching { default_queue_policy { default_timeout_microseconds: 18446744073709551615 } }",
            "default_timeout_microseconds",
        );
        refused("max_batch_size: 100000000", "max_batch_size");
        refused(r#"input [{ name: "x" dims: [-5] }]"#, "dim -5");
    }

    #[test]
    fn sane_configs_pass() {
        let c = parse_text(
            r#"max_batch_size: 64
               dynamic_batching { preferred_batch_size: [8, 64] max_queue_delay_microseconds: 500
                                  priority_levels: 2 default_priority_level: 1
                                  priority_queue_policy { key: 2 value { max_queue_size: 10 } } }
               instance_group [{ count: 2 }]
               parameters { key: "intra_op_thread_count" value { string_value: "4" } }"#,
        )
        .unwrap();
        check(&c).unwrap();
        assert!(check_request_timeout(MAX_TIMEOUT_US).is_ok());
        assert!(check_request_timeout(u64::MAX).is_err());
    }
}
