//! What the command line prints: JSON documents (fields in a fixed order)
//! and the repository table.

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;
use switchyard_client::{InferResult, proto};

/// An inference result as printed by `infer`: a JSON document with one
/// compact line per output, so large tensors stay readable.
pub fn result_text(r: &InferResult) -> String {
    let quote = |s: &str| Value::String(s.to_string()).to_string();
    let mut out = format!(
        "{{\n  \"model_name\": {},\n  \"model_version\": {},\n",
        quote(&r.model_name),
        quote(&r.model_version)
    );
    if !r.id.is_empty() {
        out.push_str(&format!("  \"id\": {},\n", quote(&r.id)));
    }
    out.push_str("  \"outputs\": [\n");
    for (i, t) in r.outputs.iter().enumerate() {
        let line = TensorJson {
            name: &t.name,
            datatype: t.datatype(),
            shape: &t.shape,
            data: t.data.to_json(),
        };
        let sep = if i + 1 < r.outputs.len() { "," } else { "" };
        out.push_str(&format!(
            "    {}{sep}\n",
            serde_json::to_string(&line).unwrap_or_default()
        ));
    }
    out.push_str("  ]\n}");
    out
}

#[derive(Debug, Serialize)]
struct TensorJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    data: Value,
}

/// gRPC model metadata in the REST protocol's JSON shape.
#[derive(Debug, Serialize)]
pub struct MetadataJson {
    name: String,
    versions: Vec<String>,
    platform: String,
    inputs: Vec<TensorMetaJson>,
    outputs: Vec<TensorMetaJson>,
}

#[derive(Debug, Serialize)]
struct TensorMetaJson {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

impl From<proto::ModelMetadataResponse> for MetadataJson {
    fn from(m: proto::ModelMetadataResponse) -> Self {
        let tensors = |ts: Vec<proto::model_metadata_response::TensorMetadata>| {
            ts.into_iter()
                .map(|t| TensorMetaJson {
                    name: t.name,
                    datatype: t.datatype,
                    shape: t.shape,
                })
                .collect()
        };
        MetadataJson {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }
    }
}

/// Rows (name, version, state, reason) of a REST repository index.
pub fn index_rows_from_json(index: &Value) -> Result<Vec<[String; 4]>> {
    let Some(entries) = index.as_array() else {
        bail!("the repository index is not a JSON array: {index}");
    };
    Ok(entries
        .iter()
        .map(|e| {
            ["name", "version", "state", "reason"].map(|k| e.get(k).and_then(Value::as_str).unwrap_or("").to_string())
        })
        .collect())
}

/// Rows (name, version, state, reason) of a gRPC repository index.
pub fn index_rows_from_proto(index: proto::RepositoryIndexResponse) -> Vec<[String; 4]> {
    index
        .models
        .into_iter()
        .map(|m| [m.name, m.version, m.state, m.reason])
        .collect()
}

/// A left-aligned text table; the last column is not padded.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 < N {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(*header);
    for row in rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_client::{Data, Tensor};

    #[test]
    fn results_print_in_protocol_order_with_readable_data() {
        let r = InferResult {
            model_name: "m".into(),
            model_version: "1".into(),
            id: String::new(),
            outputs: vec![
                Tensor::new("h", vec![2], Data::F16(vec![0x3c00, 0xb800])),
                Tensor::new("s", vec![2], Data::Bytes(vec![b"a".to_vec(), vec![0xff]])),
            ],
        };
        let text = result_text(&r);
        assert_eq!(
            text,
            r#"{
  "model_name": "m",
  "model_version": "1",
  "outputs": [
    {"name":"h","datatype":"FP16","shape":[2],"data":[1.0,-0.5]},
    {"name":"s","datatype":"BYTES","shape":[2],"data":["a",[255]]}
  ]
}"#
        );
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["outputs"][1]["data"], json!(["a", [255]]));
        let empty = InferResult {
            id: "r\"1".into(),
            outputs: vec![],
            ..r
        };
        let parsed: Value = serde_json::from_str(&result_text(&empty)).unwrap();
        assert_eq!(
            parsed,
            json!({"model_name": "m", "model_version": "1", "id": "r\"1", "outputs": []})
        );
    }

    #[test]
    fn index_tables_line_up() {
        let rows = index_rows_from_json(&json!([
            {"name": "simple", "version": "1", "state": "READY"},
            {"name": "broken_model", "state": "UNAVAILABLE", "reason": "bad config"},
        ]))
        .unwrap();
        assert_eq!(
            table(&["NAME", "VERSION", "STATE", "REASON"], &rows),
            "NAME          VERSION  STATE        REASON\n\
             simple        1        READY\n\
             broken_model           UNAVAILABLE  bad config\n"
        );
        assert!(index_rows_from_json(&json!({})).is_err());
    }
}
