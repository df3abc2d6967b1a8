//! Golden sets: the gate a version passes before it takes traffic, and the
//! same check run offline by `switchyard validate`.
//!
//! Layout, inside a version directory:
//!
//! ```text
//! <model>/<version>/validation/cases/<name>.json   one case per file
//! <model>/<version>/validation/budget.json         optional latency budget
//! ```
//!
//! A case is a V2 inference request's `inputs` plus the expected `outputs`
//! (V2 tensors; `data` flat or nested) and an optional tolerance:
//!
//! ```json
//! {"inputs":  [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}],
//!  "outputs": [{"name": "OUTPUT0", "shape": [1, 2], "data": [2.0, 4.0]}],
//!  "tolerance": {"absolute": 1e-5, "relative": 1e-4}}
//! ```
//!
//! A numeric output passes when every element satisfies
//! `|actual - expected| <= absolute + relative * |expected|` (NaN matches NaN);
//! BYTES outputs compare as strings. Outputs a case does not list are not
//! checked. The budget `{"p99_ms": 20, "requests": 200}` runs the cases
//! round-robin `requests` times after warm-up and fails when the p99 of the
//! version's own latency (queue + compute) is above `p99_ms`.

use crate::repository::Repository;
use crate::repository::files::MAX_SIDE_FILE_BYTES;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

use super::failure::{FailureKind, LoadFailure};
use crate::registry::VersionHandle;
use crate::tensor::{Tensor, TensorData, bound_message, echo};

/// Cases one golden set may hold at most.
pub const MAX_CASES: usize = 10_000;
/// Budget requests at most.
pub const MAX_BUDGET_REQUESTS: usize = 100_000;
/// Default tolerances.
pub const DEFAULT_ABSOLUTE: f64 = 1e-5;
/// Default relative tolerance.
pub const DEFAULT_RELATIVE: f64 = 1e-4;

/// One golden case.
#[derive(Debug, Clone)]
pub struct Case {
    /// File stem.
    pub name: String,
    /// Request inputs.
    pub inputs: Vec<Tensor>,
    /// Expected outputs.
    pub expected: Vec<Expected>,
    /// Absolute tolerance.
    pub absolute: f64,
    /// Relative tolerance.
    pub relative: f64,
}

impl Case {
    /// The expected outputs as tensors of the model's datatypes (numeric
    /// outputs with a shape only): a reference sample for drift monitoring.
    pub fn expected_tensors(&self, outputs: &[crate::registry::TensorSpec]) -> Vec<Tensor> {
        self.expected
            .iter()
            .filter_map(|e| {
                let spec = outputs.iter().find(|o| o.name == e.name)?;
                let (Values::Numbers(values), Some(shape)) = (&e.values, &e.shape) else {
                    return None;
                };
                Tensor::from_f64(&e.name, spec.datatype, shape.clone(), values)
            })
            .collect()
    }
}

/// An expected output.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Output name.
    pub name: String,
    /// Expected shape, when given.
    pub shape: Option<Vec<i64>>,
    /// Expected elements.
    pub values: Values,
}

/// Expected elements.
#[derive(Debug, Clone)]
pub enum Values {
    /// Numbers (booleans as 0/1).
    Numbers(Vec<f64>),
    /// Strings (BYTES outputs).
    Strings(Vec<String>),
}

/// A latency budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Largest acceptable p99, milliseconds.
    pub p99_ms: f64,
    /// Requests to measure.
    #[serde(default = "default_requests")]
    pub requests: usize,
}

fn default_requests() -> usize {
    100
}

/// A version's golden set.
#[derive(Debug, Clone)]
pub struct GoldenSet {
    /// The `validation` directory.
    pub dir: PathBuf,
    /// Cases, by file name.
    pub cases: Vec<Case>,
    /// Latency budget.
    pub budget: Option<Budget>,
}

/// What a passing check measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cases that passed.
    pub cases: usize,
    /// Measured p99 in milliseconds, when a budget was set.
    pub p99_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    inputs: Vec<Value>,
    outputs: Vec<OutputFile>,
    #[serde(default)]
    tolerance: Option<Tolerance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFile {
    name: String,
    #[serde(default)]
    datatype: Option<String>,
    #[serde(default)]
    shape: Option<Vec<i64>>,
    data: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tolerance {
    #[serde(default)]
    absolute: Option<f64>,
    #[serde(default)]
    relative: Option<f64>,
}

/// Reads the golden set under `version_dir/validation`, if there is one.
pub fn load(repo: &Repository, version_dir: &Path, max_elements: usize) -> Result<Option<GoldenSet>, String> {
    let dir = version_dir.join("validation");
    if !dir.is_dir() {
        return Ok(None);
    }
    let budget_path = dir.join("budget.json");
    let budget = match repo.is_file(&budget_path)? {
        true => {
            let raw = repo.read(&budget_path, MAX_SIDE_FILE_BYTES)?;
            let b: Budget = serde_json::from_slice(&raw)
                .map_err(|e| bound_message(format!("{}: {e}", dir.join("budget.json").display())))?;
            if b.p99_ms.is_nan() || b.p99_ms <= 0.0 || b.requests == 0 || b.requests > MAX_BUDGET_REQUESTS {
                return Err(format!(
                    "{}: p99_ms must be > 0 and requests in 1..={MAX_BUDGET_REQUESTS}",
                    dir.join("budget.json").display()
                ));
            }
            Some(b)
        }
        false => None,
    };
    let cases_dir = dir.join("cases");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&cases_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", cases_dir.display())),
    };
    files.sort();
    if files.len() > MAX_CASES {
        return Err(format!("{}: more than {MAX_CASES} cases", cases_dir.display()));
    }
    if files.is_empty() && budget.is_some() {
        return Err(format!(
            "{}: a latency budget needs at least one case in {}",
            dir.display(),
            cases_dir.display()
        ));
    }
    let cases = files
        .iter()
        .map(|f| read_case(repo, f, max_elements).map_err(|e| format!("{}: {e}", f.display())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(GoldenSet { dir, cases, budget }))
}

fn read_case(repo: &Repository, path: &Path, max_elements: usize) -> Result<Case, String> {
    let raw = repo.read(path, MAX_SIDE_FILE_BYTES)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_case(&raw, &name, max_elements)
}

/// Parses the bytes of one case file (`name` is the case's name, the file
/// stem); the inputs are checked against `max_elements` as a request's are.
pub fn parse_case(raw: &[u8], name: &str, max_elements: usize) -> Result<Case, String> {
    let file: CaseFile = serde_json::from_slice(raw).map_err(|e| bound_message(format!("malformed case: {e}")))?;
    let inputs = (file.inputs.iter())
        .map(|v| crate::tensor::json::parse_tensor(v, max_elements))
        .collect::<crate::error::Result<Vec<_>>>()
        .map_err(|e| e.message)?;
    let expected = file
        .outputs
        .into_iter()
        .map(|o| {
            let mut flat = Vec::new();
            flatten(&o.data, &mut flat);
            let is_bytes = o.datatype.as_deref() == Some("BYTES") || flat.iter().any(|v| v.is_string());
            let values = if is_bytes {
                Values::Strings(
                    flat.iter()
                        .map(|v| v.as_str().map(str::to_string).ok_or("BYTES data must be strings"))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("output '{}': {e}", echo(&o.name)))?,
                )
            } else {
                Values::Numbers(
                    flat.iter()
                        .map(|v| match v {
                            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
                            Value::Null => Ok(f64::NAN),
                            v => v.as_f64().ok_or("data must be numbers"),
                        })
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("output '{}': {e}", echo(&o.name)))?,
                )
            };
            Ok(Expected {
                name: o.name,
                shape: o.shape,
                values,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let tol = file.tolerance.unwrap_or(Tolerance {
        absolute: None,
        relative: None,
    });
    let (absolute, relative) = (
        tol.absolute.unwrap_or(DEFAULT_ABSOLUTE),
        tol.relative.unwrap_or(DEFAULT_RELATIVE),
    );
    if absolute.is_nan() || relative.is_nan() || absolute < 0.0 || relative < 0.0 {
        return Err("tolerances must be non-negative numbers".into());
    }
    Ok(Case {
        name: name.to_string(),
        inputs,
        expected,
        absolute,
        relative,
    })
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

/// Compares a version's outputs with one case; the first difference is the error.
pub fn compare(case: &Case, outputs: &[Tensor]) -> Result<(), String> {
    for want in &case.expected {
        let got = outputs
            .iter()
            .find(|t| t.name == want.name)
            .ok_or_else(|| format!("output '{}' is missing", want.name))?;
        if let Some(shape) = &want.shape
            && shape != &got.shape
        {
            return Err(format!(
                "output '{}': shape {:?}, expected {shape:?}",
                want.name, got.shape
            ));
        }
        match (&want.values, &got.data) {
            (Values::Strings(expected), TensorData::Bytes(actual)) => {
                if expected.len() != actual.len() {
                    return Err(format!(
                        "output '{}': {} elements, expected {}",
                        want.name,
                        actual.len(),
                        expected.len()
                    ));
                }
                if let Some(i) = (0..expected.len()).find(|&i| expected[i].as_bytes() != &actual[i][..]) {
                    return Err(format!(
                        "output '{}' element {i}: {:?}, expected {:?}",
                        want.name,
                        String::from_utf8_lossy(&actual[i]),
                        expected[i]
                    ));
                }
            }
            (Values::Numbers(expected), _) => {
                let actual = got
                    .values_f64()
                    .ok_or_else(|| format!("output '{}' is not numeric", want.name))?;
                if expected.len() != actual.len() {
                    return Err(format!(
                        "output '{}': {} elements, expected {}",
                        want.name,
                        actual.len(),
                        expected.len()
                    ));
                }
                for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
                    let ok = (a.is_nan() && e.is_nan()) || (a - e).abs() <= case.absolute + case.relative * e.abs();
                    if !ok {
                        return Err(format!(
                            "output '{}' element {i}: {a}, expected {e} (tolerance {} + {} x |expected|)",
                            want.name, case.absolute, case.relative
                        ));
                    }
                }
            }
            (Values::Strings(_), _) => {
                return Err(format!("output '{}' is not BYTES", want.name));
            }
        }
    }
    Ok(())
}

/// Runs every case on the (unpublished) version, then the latency budget.
pub async fn check(handle: &VersionHandle, set: &GoldenSet, max_elements: usize) -> Result<Report, LoadFailure> {
    let golden = |e: String| LoadFailure::new(FailureKind::Golden, e);
    let budget_failure = |e: String| LoadFailure::new(FailureKind::Budget, e);
    for case in &set.cases {
        let out = super::run_direct(handle, case.inputs.clone(), max_elements)
            .await
            .map_err(|e| golden(format!("golden case '{}': {e}", case.name)))?;
        compare(case, &out.outputs).map_err(|e| golden(format!("golden case '{}': {e}", case.name)))?;
    }
    let mut report = Report {
        cases: set.cases.len(),
        p99_ms: None,
    };
    if let Some(budget) = &set.budget {
        let mut samples = Vec::with_capacity(budget.requests);
        for i in 0..budget.requests {
            let case = &set.cases[i % set.cases.len()];
            let started = Instant::now();
            super::run_direct(handle, case.inputs.clone(), max_elements)
                .await
                .map_err(|e| budget_failure(format!("latency budget, case '{}': {e}", case.name)))?;
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        let idx = ((samples.len() as f64 * 0.99).ceil() as usize).clamp(1, samples.len()) - 1;
        let p99 = samples[idx];
        report.p99_ms = Some(p99);
        if p99 > budget.p99_ms {
            return Err(budget_failure(format!(
                "latency budget: p99 {p99:.3} ms over {} requests is above the budget of {} ms",
                budget.requests, budget.p99_ms
            )));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn case(values: Values, absolute: f64, relative: f64) -> Case {
        Case {
            name: "c".into(),
            inputs: vec![],
            expected: vec![Expected {
                name: "OUT".into(),
                shape: Some(vec![1, 3]),
                values,
            }],
            absolute,
            relative,
        }
    }

    fn fp32(values: &[f32]) -> Tensor {
        Tensor {
            name: "OUT".into(),
            datatype: DataType::Fp32,
            shape: vec![1, values.len() as i64],
            data: TensorData::Fixed(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()),
        }
    }

    #[test]
    fn tolerances_apply() {
        let c = case(Values::Numbers(vec![1.0, 2.0, 100.0]), 1e-3, 1e-2);
        assert!(compare(&c, &[fp32(&[1.0005, 2.0, 100.9])]).is_ok());
        let err = compare(&c, &[fp32(&[1.0, 2.1, 100.0])]).unwrap_err();
        assert!(err.contains("element 1"), "{err}");
        let err = compare(&c, &[fp32(&[1.0, 2.0])]).unwrap_err();
        assert!(err.contains("shape"), "{err}");
        let nan = case(Values::Numbers(vec![f64::NAN, 0.0, 0.0]), 0.0, 0.0);
        assert!(compare(&nan, &[fp32(&[f32::NAN, 0.0, 0.0])]).is_ok());
        assert!(compare(&c, &[]).unwrap_err().contains("missing"));
    }

    #[test]
    fn reads_cases_and_refuses_malformed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cases = dir.path().join("validation/cases");
        std::fs::create_dir_all(&cases).unwrap();
        std::fs::write(
            cases.join("a.json"),
            r#"{"inputs":[{"name":"X","datatype":"FP32","shape":[1,2],"data":[[1,2]]}],
                "outputs":[{"name":"Y","shape":[1,2],"data":[[2,4]]}],"tolerance":{"absolute":0.5}}"#,
        )
        .unwrap();
        let set = load(&Repository::new(dir.path()), dir.path(), 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(set.cases.len(), 1);
        assert_eq!(set.cases[0].absolute, 0.5);
        assert_eq!(set.cases[0].relative, DEFAULT_RELATIVE);
        assert_eq!(set.cases[0].inputs[0].shape, vec![1, 2]);
        std::fs::write(dir.path().join("validation/budget.json"), r#"{"p99_ms": -1}"#).unwrap();
        assert!(
            load(&Repository::new(dir.path()), dir.path(), 1 << 20)
                .unwrap_err()
                .contains("p99_ms")
        );
        std::fs::remove_file(dir.path().join("validation/budget.json")).unwrap();
        std::fs::write(cases.join("b.json"), r#"{"inputs": []}"#).unwrap();
        assert!(
            load(&Repository::new(dir.path()), dir.path(), 1 << 20)
                .unwrap_err()
                .contains("b.json")
        );
        assert!(
            load(&Repository::new(dir.path()), &dir.path().join("nothing"), 1)
                .unwrap()
                .is_none()
        );
    }
}
