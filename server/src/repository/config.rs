//! `config.pbtxt`: parsed as protobuf text format against Triton's
//! `ModelConfig` schema (reflection over the generated descriptor set, no
//! hand-written parser), completed from the ONNX file and checked against it.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use switchyard_proto::inference::{
    ModelConfig, ModelInput, ModelInstanceGroup, ModelOutput, ModelVersionPolicy, model_instance_group::Kind,
    model_version_policy,
};

use crate::model::{DeviceRequest, IoSpec, SessionSettings, Signature};
use crate::tensor::{DataType, bound_message};

/// Platform name Triton reports for ONNX Runtime models.
pub const PLATFORM: &str = "onnxruntime_onnx";
/// Backend name Triton uses for ONNX Runtime.
pub const BACKEND: &str = "onnxruntime";

fn descriptor(name: &str) -> MessageDescriptor {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(switchyard_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set generated at build time decodes")
    })
    .get_message_by_name(name)
    .expect("message is in the generated descriptor set")
}

fn config_descriptor() -> MessageDescriptor {
    descriptor("inference.ModelConfig")
}

/// Deepest nesting of messages (`{ ... }` or `< ... >`) a `config.pbtxt` may
/// have. Triton's configs nest a few levels; the parser underneath recurses
/// once per level (Any expansions nest without end) and has no limit of its own.
pub const MAX_TEXT_DEPTH: usize = 64;

/// Parses protobuf text format (the content of a `config.pbtxt`).
pub fn parse_text(text: &str) -> Result<ModelConfig, String> {
    let text = colon_before_lists(text)?;
    let msg =
        DynamicMessage::parse_text_format(config_descriptor(), &text).map_err(|e| bound_message(e.to_string()))?;
    msg.transcode_to().map_err(|e| bound_message(e.to_string()))
}

/// Text format allows `input [ { ... } ]` (no colon before a list of
/// messages), and Triton's configs use it everywhere; the parser underneath
/// wants `input: [ ... ]`. This inserts the colon between a field name and
/// `[`, leaving strings and comments alone, and refuses messages nested deeper
/// than [`MAX_TEXT_DEPTH`]. Everything else is the parser's.
fn colon_before_lists(text: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut changed = false;
    let mut i = 0;
    let mut last_ident_end: Option<usize> = None;
    let mut depth = 0usize;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'{' | b'<' => {
                depth += 1;
                if depth > MAX_TEXT_DEPTH {
                    return Err(format!(
                        "messages nested deeper than {MAX_TEXT_DEPTH} levels (at byte {i})"
                    ));
                }
                last_ident_end = None;
            }
            b'}' | b'>' => {
                depth = depth.saturating_sub(1);
                last_ident_end = None;
            }
            b'"' | b'\'' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                out.push_str(&text[start..i]);
                last_ident_end = None;
                continue;
            }
            b'#' => {
                let start = i;
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                out.push_str(&text[start..i]);
                continue;
            }
            b'[' if last_ident_end.is_some() => {
                out.push_str(": [");
                changed = true;
                last_ident_end = None;
                i += 1;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                out.push_str(&text[start..i]);
                last_ident_end = Some(i);
                continue;
            }
            c if c.is_ascii_whitespace() => {}
            _ => last_ident_end = None,
        }
        // Multi-byte UTF-8 sequences are copied whole.
        let len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + len]);
        i += len;
    }
    Ok(if changed {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(text)
    })
}

/// Parses a config given as JSON (Triton's `config` load parameter).
pub fn parse_json(text: &str) -> Result<ModelConfig, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let msg = DynamicMessage::deserialize(config_descriptor(), &mut de).map_err(|e| bound_message(e.to_string()))?;
    de.end().map_err(|e| bound_message(e.to_string()))?;
    msg.transcode_to().map_err(|e| bound_message(e.to_string()))
}

/// Prints any generated message as JSON the way Triton's HTTP API does:
/// proto field names, enums by name, 64-bit integers as numbers, defaults included.
pub fn message_to_json<T: prost::Message>(message: &T, full_name: &str) -> serde_json::Value {
    let mut dynamic = DynamicMessage::new(descriptor(full_name));
    if dynamic.transcode_from(message).is_err() {
        return serde_json::Value::Null;
    }
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(serde_json::Value::Null)
}

/// Prints a `ModelConfig` as JSON.
pub fn config_to_json(config: &ModelConfig) -> serde_json::Value {
    message_to_json(config, "inference.ModelConfig")
}

/// Checks a config against the ONNX signature of one version and completes
/// what it leaves out: name, platform, inputs, outputs, datatypes, dims,
/// max_batch_size, instance group and version policy. An error names the
/// model, the version and the field at fault.
pub fn complete(
    config: &mut ModelConfig,
    sig: &Signature,
    model: &str,
    version: i64,
    default_max_batch_size: u32,
) -> Result<(), String> {
    let at = |msg: String| format!("model '{model}' version {version}: {msg}");
    if config.name.is_empty() {
        config.name = model.to_string();
    } else if config.name != model {
        return Err(at(format!(
            "config name '{}' does not match the model directory '{model}'",
            config.name
        )));
    }
    match (config.platform.as_str(), config.backend.as_str()) {
        ("" | PLATFORM, "" | BACKEND) => {
            config.platform = PLATFORM.into();
            config.backend = BACKEND.into();
        }
        (p, b) => {
            return Err(at(format!(
                "platform '{p}' / backend '{b}' is not supported (only {PLATFORM} / {BACKEND})"
            )));
        }
    }
    // Initializers with a default value are inputs where the configuration names them.
    let defaulted: Vec<&IoSpec> = sig
        .defaulted_inputs
        .iter()
        .filter(|d| config.input.iter().any(|c| c.name == d.name) && !sig.inputs.iter().any(|i| i.name == d.name))
        .collect();
    let model_io = || sig.inputs.iter().chain(defaulted.iter().copied()).chain(&sig.outputs);
    for io in model_io() {
        if let Err(ty) = &io.datatype {
            return Err(at(format!(
                "tensor '{}' has type {ty}, which the protocol cannot carry",
                io.name
            )));
        }
    }
    if config.max_batch_size < 0 {
        return Err(at(format!("max_batch_size {} is negative", config.max_batch_size)));
    }
    let batchable = |io: &IoSpec| io.dims.first() == Some(&-1);
    if config.max_batch_size == 0
        && config.input.is_empty()
        && config.output.is_empty()
        && default_max_batch_size > 0
        && sig.inputs.iter().chain(&sig.outputs).all(batchable)
    {
        config.max_batch_size = default_max_batch_size as i32;
    }
    let batching = config.max_batch_size > 0;
    if batching && let Some(io) = model_io().find(|io| !batchable(io)) {
        return Err(at(format!(
            "max_batch_size is {} but tensor '{}' has no variable first (batch) dimension: model shape {:?}",
            config.max_batch_size, io.name, io.dims
        )));
    }
    let expected_dims = |io: &IoSpec| -> Vec<i64> {
        if batching {
            io.dims[1..].to_vec()
        } else {
            io.dims.clone()
        }
    };

    for (i, input) in config.input.iter_mut().enumerate() {
        let spec = match defaulted.iter().find(|d| d.name == input.name) {
            Some(d) => *d,
            None => find(&sig.inputs, &input.name, "input", i).map_err(at)?,
        };
        check_tensor(
            &mut input.data_type,
            &mut input.dims,
            input.reshape.is_some(),
            spec,
            &expected_dims(spec),
            &format!("input[{i}] '{}'", input.name),
        )
        .map_err(at)?;
    }
    for (i, output) in config.output.iter_mut().enumerate() {
        let spec = find(&sig.outputs, &output.name, "output", i).map_err(at)?;
        check_tensor(
            &mut output.data_type,
            &mut output.dims,
            output.reshape.is_some(),
            spec,
            &expected_dims(spec),
            &format!("output[{i}] '{}'", output.name),
        )
        .map_err(at)?;
    }
    for spec in &sig.inputs {
        if !config.input.iter().any(|c| c.name == spec.name) {
            config.input.push(ModelInput {
                name: spec.name.clone(),
                data_type: spec_type(spec),
                dims: expected_dims(spec),
                ..Default::default()
            });
        }
    }
    for spec in &sig.outputs {
        if !config.output.iter().any(|c| c.name == spec.name) {
            config.output.push(ModelOutput {
                name: spec.name.clone(),
                data_type: spec_type(spec),
                dims: expected_dims(spec),
                ..Default::default()
            });
        }
    }
    if config.instance_group.is_empty() {
        config.instance_group.push(ModelInstanceGroup {
            kind: Kind::Auto as i32,
            count: 1,
            ..Default::default()
        });
    }
    for group in &mut config.instance_group {
        if group.count <= 0 {
            group.count = 1;
        }
    }
    if config.version_policy.is_none() {
        config.version_policy = Some(ModelVersionPolicy {
            policy_choice: Some(model_version_policy::PolicyChoice::Latest(
                model_version_policy::Latest { num_versions: 1 },
            )),
        });
    }
    Ok(())
}

fn spec_type(spec: &IoSpec) -> i32 {
    spec.datatype.as_ref().map_or(0, |d| d.config_enum())
}

fn find<'a>(specs: &'a [IoSpec], name: &str, what: &str, index: usize) -> Result<&'a IoSpec, String> {
    specs.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        format!("config {what}[{index}] '{name}' is not an {what} of the model (model {what}s: {names:?})")
    })
}

fn check_tensor(
    data_type: &mut i32,
    dims: &mut Vec<i64>,
    has_reshape: bool,
    spec: &IoSpec,
    expected: &[i64],
    field: &str,
) -> Result<(), String> {
    if has_reshape {
        return Err(format!("{field}: 'reshape' is not supported"));
    }
    let model_type = spec_type(spec);
    if *data_type == 0 {
        *data_type = model_type;
    } else if *data_type != model_type {
        let name = |v: i32| DataType::from_config_enum(v).map_or("TYPE_INVALID", DataType::config_name);
        return Err(format!(
            "{field}: data_type {} does not match the model's {}",
            name(*data_type),
            name(model_type)
        ));
    }
    if dims.is_empty() && !expected.is_empty() {
        *dims = expected.to_vec();
        return Ok(());
    }
    if expected.is_empty() && dims.as_slice() == [1] {
        // A scalar, as Triton's configs describe one (its ONNX backend serves it).
        return Ok(());
    }
    let compatible =
        dims.len() == expected.len() && dims.iter().zip(expected).all(|(&c, &m)| c == m || m == -1 || c == -1);
    if !compatible {
        return Err(format!(
            "{field}: dims {dims:?} do not match the model's {expected:?} (batch dimension excluded when max_batch_size > 0)"
        ));
    }
    // Where the model is fixed, keep the model's size: a config -1 would only
    // let requests through that the session then rejects.
    for (c, &m) in dims.iter_mut().zip(expected) {
        if m != -1 {
            *c = m;
        }
    }
    Ok(())
}

/// Execution settings from a completed config: threads and device.
pub fn session_settings(config: &ModelConfig, available_cores: usize) -> Result<SessionSettings, String> {
    let param = |key: &str| config.parameters.get(key).map(|p| p.string_value.trim().to_string());
    let int_param = |key: &str| -> Result<Option<i64>, String> {
        param(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("parameter '{key}' must be an integer, got '{v}'"))
            })
            .transpose()
    };
    let instances = instance_count(config);
    let intra = match int_param("intra_op_thread_count")? {
        Some(n) if n > 0 => n as usize,
        // The default budget: instances × intra-op threads never exceed the cores.
        _ => (available_cores / instances).max(1),
    };
    let inter = int_param("inter_op_thread_count")?.filter(|n| *n > 0).unwrap_or(1) as usize;
    let parallel_execution = int_param("execution_mode")? == Some(1);
    let graph_optimization_level = config
        .optimization
        .as_ref()
        .and_then(|o| o.graph.as_ref())
        .map_or(0, |g| g.level);
    let allow_cpu_fallback = param("allow_cpu_fallback").is_some_and(|v| v == "true" || v == "1");
    let group = config.instance_group.first();
    let gpu_id = group.and_then(|g| g.gpus.first().copied()).unwrap_or(0);
    let accelerator_gpu = config
        .optimization
        .as_ref()
        .and_then(|o| o.execution_accelerators.as_ref())
        .is_some_and(|a| !a.gpu_execution_accelerator.is_empty());
    let kind = group.map_or(Kind::Auto as i32, |g| g.kind);
    let device = if kind == Kind::Gpu as i32 || accelerator_gpu {
        DeviceRequest::Gpu {
            device_id: gpu_id,
            allow_cpu_fallback,
        }
    } else if kind == Kind::Cpu as i32 {
        DeviceRequest::Cpu
    } else {
        DeviceRequest::Auto
    };
    Ok(SessionSettings {
        intra_op_threads: intra,
        inter_op_threads: inter,
        parallel_execution,
        graph_optimization_level,
        device,
        allow_spinning: param("allow_spinning").is_some_and(|v| v == "true" || v == "1"),
        // Triton's ONNX Runtime backend names; on unless "0" or "false".
        mem_arena: param("enable_mem_arena").is_none_or(|v| v != "0" && v != "false"),
        mem_pattern: param("enable_mem_pattern").is_none_or(|v| v != "0" && v != "false"),
    })
}

/// Executors (sessions) per version: the sum of the instance groups' counts.
pub fn instance_count(config: &ModelConfig) -> usize {
    config
        .instance_group
        .iter()
        .map(|g| g.count.max(1) as usize)
        .sum::<usize>()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> Signature {
        let io = |name: &str, dt, dims: &[i64]| IoSpec {
            name: name.into(),
            datatype: Ok(dt),
            dims: dims.to_vec(),
        };
        Signature {
            inputs: vec![
                io("INPUT0", DataType::Int32, &[-1, 16]),
                io("INPUT1", DataType::Int32, &[-1, 16]),
            ],
            outputs: vec![io("OUTPUT0", DataType::Int32, &[-1, 16])],
            defaulted_inputs: vec![io("BIAS", DataType::Int32, &[-1, 16])],
        }
    }

    #[test]
    fn parses_triton_text_format() {
        let c = parse_text(
            r#"
            name: "simple"
            platform: "onnxruntime_onnx"
            max_batch_size: 8
            input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] } ]
            dynamic_batching { max_queue_delay_microseconds: 100 }
            instance_group [ { kind: KIND_CPU count: 2 } ]
            version_policy: { all { } }
            parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
            "#,
        )
        .unwrap();
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.input[0].dims, [16]);
        assert_eq!(c.instance_group[0].count, 2);
        assert!(matches!(
            c.scheduling_choice,
            Some(switchyard_proto::inference::model_config::SchedulingChoice::DynamicBatching(_))
        ));
        assert!(parse_text("max_batch_size: \"eight\"").is_err());
        assert!(parse_text("no_such_field: 1").is_err());
        // Lists of messages with and without the colon; brackets in strings and comments untouched.
        let c = parse_text("name: \"a [b]\" # input [\ninput [{ name: \"x\" dims: [1] }, { name: \"y\" }]").unwrap();
        assert_eq!((c.name.as_str(), c.input.len()), ("a [b]", 2));
    }

    #[test]
    fn completes_an_empty_config_with_default_batching() {
        let mut c = ModelConfig::default();
        complete(&mut c, &sig(), "m", 1, 4).unwrap();
        assert_eq!(c.name, "m");
        assert_eq!(c.platform, PLATFORM);
        assert_eq!(c.max_batch_size, 4);
        assert_eq!(c.input.len(), 2);
        assert_eq!(c.input[0].dims, [16]);
        assert_eq!(c.input[0].data_type, DataType::Int32.config_enum());
        assert_eq!(c.output[0].name, "OUTPUT0");
        assert_eq!(instance_count(&c), 1);
    }

    #[test]
    fn rejects_contradictions_naming_the_field() {
        let mut c =
            parse_text(r#"max_batch_size: 8 input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [16] }]"#).unwrap();
        let e = complete(&mut c, &sig(), "m", 3, 4).unwrap_err();
        assert!(
            e.contains("model 'm' version 3") && e.contains("input[0] 'INPUT0'") && e.contains("TYPE_FP32"),
            "{e}"
        );

        let mut c =
            parse_text(r#"max_batch_size: 8 input [{ name: "INPUT0" data_type: TYPE_INT32 dims: [17] }]"#).unwrap();
        assert!(complete(&mut c, &sig(), "m", 1, 4).unwrap_err().contains("dims [17]"));

        let mut c = parse_text(r#"input [{ name: "NOPE" data_type: TYPE_INT32 dims: [16] }]"#).unwrap();
        assert!(
            complete(&mut c, &sig(), "m", 1, 4)
                .unwrap_err()
                .contains("'NOPE' is not an input")
        );

        let mut c = parse_text(r#"name: "other""#).unwrap();
        assert!(complete(&mut c, &sig(), "m", 1, 4).is_err());

        let mut fixed = sig();
        fixed.inputs[0].dims = vec![1, 16];
        let mut c = parse_text("max_batch_size: 8").unwrap();
        assert!(
            complete(&mut c, &fixed, "m", 1, 4)
                .unwrap_err()
                .contains("no variable first")
        );
    }

    #[test]
    fn initializers_with_defaults_are_inputs_only_where_named() {
        let mut c = parse_text("max_batch_size: 8").unwrap();
        complete(&mut c, &sig(), "m", 1, 4).unwrap();
        assert!(c.input.iter().all(|i| i.name != "BIAS"), "never added on its own");

        let mut c =
            parse_text(r#"max_batch_size: 8 input [{ name: "BIAS" data_type: TYPE_INT32 dims: [16] optional: true }]"#)
                .unwrap();
        complete(&mut c, &sig(), "m", 1, 4).unwrap();
        let names: Vec<&str> = c.input.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["BIAS", "INPUT0", "INPUT1"]);
        assert!(c.input[0].optional);

        let mut c =
            parse_text(r#"max_batch_size: 8 input [{ name: "BIAS" data_type: TYPE_FP32 dims: [16] }]"#).unwrap();
        assert!(complete(&mut c, &sig(), "m", 1, 4).unwrap_err().contains("TYPE_FP32"));
    }

    #[test]
    fn config_json_uses_triton_spelling() {
        let mut c = ModelConfig::default();
        complete(&mut c, &sig(), "m", 1, 4).unwrap();
        let j = config_to_json(&c);
        assert_eq!(j["max_batch_size"], 4);
        assert_eq!(j["input"][0]["data_type"], "TYPE_INT32");
        assert_eq!(j["input"][0]["dims"][0], 16);
        let back = parse_json(&j.to_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn session_settings_follow_parameters_and_instance_groups() {
        let c = parse_text(
            r#"instance_group [{ kind: KIND_GPU gpus: [1] }]
               parameters { key: "intra_op_thread_count" value { string_value: "3" } }
               parameters { key: "allow_cpu_fallback" value { string_value: "true" } }
               parameters { key: "allow_spinning" value { string_value: "true" } }
               parameters { key: "enable_mem_arena" value { string_value: "0" } }"#,
        )
        .unwrap();
        let s = session_settings(&c, 8).unwrap();
        assert_eq!(s.intra_op_threads, 3);
        assert!(s.allow_spinning);
        assert!(!s.mem_arena && s.mem_pattern, "Triton's names; on unless \"0\"");
        let default = session_settings(&ModelConfig::default(), 8).unwrap();
        assert!(default.mem_arena && default.mem_pattern);
        assert!(
            !session_settings(&ModelConfig::default(), 8).unwrap().allow_spinning,
            "off by default"
        );
        assert_eq!(
            s.device,
            DeviceRequest::Gpu {
                device_id: 1,
                allow_cpu_fallback: true
            }
        );
        let c = parse_text(r#"instance_group [{ kind: KIND_CPU count: 2 }]"#).unwrap();
        let s = session_settings(&c, 2).unwrap();
        assert_eq!((s.intra_op_threads, s.device), (1, DeviceRequest::Cpu));
        let bad = parse_text(r#"parameters { key: "intra_op_thread_count" value { string_value: "x" } }"#).unwrap();
        assert!(session_settings(&bad, 2).is_err());
    }
}
