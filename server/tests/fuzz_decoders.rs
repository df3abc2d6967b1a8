//! Property-based fuzzing of every parser that reads client or repository
//! bytes: the HTTP JSON request decoder and its binary tensor extension, the
//! gRPC request conversion (typed contents and `raw_input_contents`),
//! `config.pbtxt` text and the load API's JSON config, golden-set case files,
//! drift reference profiles, admin token files and traffic policy files.
//!
//! Inputs are structure-aware (mostly valid requests and files with mutated
//! shapes, datatypes, lengths and sizes, huge declared shapes, bytes appended,
//! cut or overwritten) and raw arbitrary bytes. Properties, for every input:
//! - no panic;
//! - the bytes allocated during one decode stay within a bound proportional to
//!   the input's size (plus the element limit where one applies), whatever
//!   shapes and sizes the input declares (a counting global allocator measures
//!   the peak on the decoding thread);
//! - an error names the problem in a non-empty message of at most 1 KiB, never
//!   the payload echoed back;
//! - what decodes is consistent (tensor data matches its shape and datatype).
//!
//! Each property runs 256 cases unless `PROPTEST_CASES` says otherwise.

// `unsafe_code` is denied workspace-wide. This test binary allows it for one
// thing: the `unsafe impl GlobalAlloc` of the counting allocator below, which
// forwards to the system allocator and only adds bookkeeping.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use serde_json::{Map, Value, json};
use switchyard::access::admin::{AdminAuth, Caller};
use switchyard::drift::{FeatureProfile, PROFILE_FORMAT, Profile, Role, TensorProfile};
use switchyard::lifecycle::golden;
use switchyard::repository::config;
use switchyard::tensor::{DataType, Tensor, TensorData};
use switchyard_proto::inference::{self as pb, model_infer_request as req_pb};

mod counting {
    //! A global allocator that forwards to the system allocator and, while
    //! [`peak`] runs on a thread, tracks that thread's live bytes and their peak.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    #[derive(Clone, Copy)]
    struct State {
        active: bool,
        current: isize,
        peak: isize,
    }

    thread_local! {
        static STATE: Cell<State> = const { Cell::new(State { active: false, current: 0, peak: 0 }) };
    }

    fn record(delta: isize) {
        // `try_with`: allocations during thread teardown are not counted.
        let _ = STATE.try_with(|s| {
            let mut st = s.get();
            if st.active {
                st.current += delta;
                st.peak = st.peak.max(st.current);
                s.set(st);
            }
        });
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is passed on unchanged.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                record(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                record(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, which is the system's.
            unsafe { System.dealloc(ptr, layout) };
            record(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as for `dealloc`.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                record(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    /// Runs `f`; returns its result and the peak of bytes allocated (and not
    /// yet freed) on this thread while it ran, the result included.
    pub fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
        STATE.with(|s| {
            s.set(State {
                active: true,
                current: 0,
                peak: 0,
            })
        });
        let r = f();
        let st = STATE.with(|s| {
            let st = s.get();
            s.set(State { active: false, ..st });
            st
        });
        (r, st.peak.max(0) as usize)
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// The element limit of the "small" runs.
const SMALL_LIMIT: usize = 4096;
/// The server's default `--max-tensor-elements`.
const SERVER_LIMIT: usize = 16 << 20;
/// Longest acceptable error message.
const MAX_MESSAGE: usize = 1024;
/// Bytes a decoder may allocate per input byte (parsed JSON trees, vectors
/// grown by doubling and the decoded tensors together stay well below).
const PER_INPUT_BYTE: usize = 64;
/// Fixed allowance on top (descriptor pools, first buffers).
const SLACK: usize = 64 << 10;
/// Elements at most written out by the generators for one tensor.
const MATERIALIZE: usize = 4096;

fn cfg() -> ProptestConfig {
    // 256 cases by default; PROPTEST_CASES overrides (read by `default()`).
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn head(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn check_message(what: &str, message: &str) -> Result<(), TestCaseError> {
    prop_assert!(!message.trim().is_empty(), "{what}: empty error message");
    prop_assert!(
        message.len() <= MAX_MESSAGE,
        "{what}: {}-byte error message: {:?}...",
        message.len(),
        head(message, 400)
    );
    Ok(())
}

fn check_peak(what: &str, peak: usize, input_len: usize, limit_bytes: usize) -> Result<(), TestCaseError> {
    let bound = PER_INPUT_BYTE * input_len + limit_bytes + SLACK;
    prop_assert!(
        peak <= bound,
        "{what}: {peak} bytes allocated for {input_len} input bytes (bound {bound})"
    );
    Ok(())
}

fn shape_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

fn check_tensor(t: &Tensor, max_elements: usize) -> Result<(), TestCaseError> {
    let count = shape_count(&t.shape);
    prop_assert!(
        count.is_some_and(|c| c <= max_elements),
        "decoded shape {:?} over the limit",
        t.shape
    );
    let count = count.unwrap_or_default();
    match (&t.data, t.datatype.size()) {
        (TensorData::Fixed(b), Some(size)) => prop_assert_eq!(b.len(), count * size, "{}", t.name),
        (TensorData::Bytes(v), None) => prop_assert_eq!(v.len(), count, "{}", t.name),
        _ => prop_assert!(false, "'{}': data of the wrong kind for {:?}", t.name, t.datatype),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Shared generators.

const DATATYPES: [&str; 14] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES",
    "BF16",
];

fn datatype_name() -> BoxedStrategy<String> {
    prop_oneof![
        16 => prop::sample::select(DATATYPES.to_vec()).prop_map(str::to_string),
        1 => "[A-Z0-9_]{0,6}",
        1 => ".{0,3000}",
    ]
    .boxed()
}

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        12 => "[A-Za-z0-9_]{1,10}",
        1 => Just(String::new()),
        1 => ".{0,4000}",
    ]
    .boxed()
}

fn dim() -> BoxedStrategy<i64> {
    prop_oneof![
        8 => 0i64..6,
        2 => 0i64..5000,
        1 => Just(-1i64),
        1 => any::<i64>(),
        1 => prop::sample::select(vec![1i64 << 31, 1 << 32, 1 << 62, i64::MAX, 16 << 20, 4097, 65_536]),
    ]
    .boxed()
}

fn shape() -> BoxedStrategy<Vec<i64>> {
    prop_oneof![
        12 => prop::collection::vec(0i64..6, 0..4),
        6 => prop::collection::vec(dim(), 0..5),
        1 => prop::collection::vec(0i64..3, 0..3000),
    ]
    .boxed()
}

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
        Just(Value::Null),
        Just(json!(1.5)),
        Just(json!(-0.0)),
        Just(json!(1e300)),
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    scalar()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(prop_oneof![4 => "[a-z_]{0,8}", 1 => ".{0,2000}"], inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

/// A JSON element of `datatype`'s kind (any scalar for an unknown datatype).
fn element(datatype: &str) -> BoxedStrategy<Value> {
    let float = || {
        prop_oneof![
            any::<f64>().prop_map(Value::from),
            (-70_000.0f64..70_000.0).prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
        ]
        .boxed()
    };
    let typed: BoxedStrategy<Value> = match datatype {
        "BOOL" => any::<bool>().prop_map(Value::from).boxed(),
        "UINT8" => (0u64..=255).prop_map(Value::from).boxed(),
        "UINT16" => (0u64..=65_535).prop_map(Value::from).boxed(),
        "UINT32" => any::<u32>().prop_map(Value::from).boxed(),
        "UINT64" => any::<u64>().prop_map(Value::from).boxed(),
        "INT8" => (-128i64..=127).prop_map(Value::from).boxed(),
        "INT16" => any::<i16>().prop_map(Value::from).boxed(),
        "INT32" => any::<i32>().prop_map(Value::from).boxed(),
        "INT64" => any::<i64>().prop_map(Value::from).boxed(),
        "FP16" | "BF16" | "FP32" | "FP64" => float(),
        "BYTES" => ".{0,12}".prop_map(Value::from).boxed(),
        _ => scalar(),
    };
    typed
}

/// Elements for `data`: of `datatype`'s kind, or mostly so.
fn elements(datatype: &str) -> BoxedStrategy<Vec<Value>> {
    prop_oneof![
        8 => prop::collection::vec(element(datatype), 1..16),
        1 => prop::collection::vec(prop_oneof![12 => element(datatype), 1 => scalar()], 1..16),
    ]
    .boxed()
}

/// -1, 0 or +1: an element or byte less or more than the shape holds.
fn off_by() -> BoxedStrategy<i8> {
    prop_oneof![8 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)].boxed()
}

fn adjust(n: usize, by: i8) -> usize {
    match by {
        -1 => n.saturating_sub(1),
        1 => n + 1,
        _ => n,
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Truncate(Index),
    Append(Vec<u8>),
    Overwrite(Index, Vec<u8>),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

fn mutation() -> BoxedStrategy<Mutation> {
    let bytes = || prop::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        20 => Just(Mutation::None),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => bytes().prop_map(Mutation::Append),
        1 => (any::<Index>(), bytes()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        1 => (any::<Index>(), bytes()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
    .boxed()
}

fn mutate(body: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match m {
        Mutation::None => {}
        Mutation::Truncate(i) => body.truncate(at(i, body.len())),
        Mutation::Append(b) => body.extend_from_slice(b),
        Mutation::Overwrite(i, b) => {
            let start = at(i, body.len());
            for (k, &x) in b.iter().enumerate() {
                match body.get_mut(start + k) {
                    Some(y) => *y = x,
                    None => body.push(x),
                }
            }
        }
        Mutation::Insert(i, b) => {
            let start = at(i, body.len());
            body.splice(start..start, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let start = at(i, body.len());
            let end = (start + n).min(body.len());
            body.drain(start..end);
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP: JSON requests and the binary tensor data extension.

#[derive(Debug, Clone)]
enum DataPlan {
    /// `data` with the shape's element count (up to [`MATERIALIZE`]) taken
    /// round-robin from `pool`, nested by the shape or flat.
    Matching { pool: Vec<Value>, nested: bool, off: i8 },
    /// `data` as any JSON value.
    Any(Value),
    /// Binary data of the shape's size (BYTES: length-prefixed elements).
    Binary { fill: Vec<u8>, off: i8 },
    /// `binary_data_size: declared` over `actual` binary bytes.
    Declared { declared: Value, actual: usize },
    /// Both `data` and `binary_data_size`.
    Both,
    /// Neither.
    Neither,
}

#[derive(Debug, Clone)]
enum InputPlan {
    Tensor {
        name: String,
        datatype: String,
        shape: Vec<i64>,
        data: DataPlan,
    },
    /// Any JSON value where an input object belongs.
    Raw(Value),
}

fn declared_size() -> BoxedStrategy<Value> {
    prop_oneof![
        (0u64..64).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(1u64 << 40)),
        Just(json!(-1)),
        Just(json!(8.5)),
        Just(json!("8")),
        Just(Value::Null),
        Just(json!(1e30)),
    ]
    .boxed()
}

/// How an input's data is carried; binary forms only where `binary` (an HTTP
/// body, not a golden case file).
fn data_plan(datatype: &str, binary: bool) -> BoxedStrategy<DataPlan> {
    let json = prop_oneof![
        12 => (elements(datatype), any::<bool>(), off_by())
            .prop_map(|(pool, nested, off)| DataPlan::Matching { pool, nested, off }),
        1 => json_value().prop_map(DataPlan::Any),
        1 => Just(DataPlan::Neither),
    ];
    if !binary {
        return json.boxed();
    }
    prop_oneof![
        8 => json,
        4 => (prop::collection::vec(any::<u8>(), 1..16), off_by()).prop_map(|(fill, off)| DataPlan::Binary { fill, off }),
        2 => (declared_size(), 0usize..64).prop_map(|(declared, actual)| DataPlan::Declared { declared, actual }),
        1 => Just(DataPlan::Both),
    ]
    .boxed()
}

fn input_plan(binary: bool) -> BoxedStrategy<InputPlan> {
    let tensor = (name(), datatype_name(), shape())
        .prop_flat_map(move |(name, datatype, shape)| {
            let data = data_plan(&datatype, binary);
            (Just(name), Just(datatype), Just(shape), data)
        })
        .prop_map(|(name, datatype, shape, data)| InputPlan::Tensor {
            name,
            datatype,
            shape,
            data,
        });
    prop_oneof![24 => tensor, 1 => json_value().prop_map(InputPlan::Raw)].boxed()
}

fn nest(flat: &[Value], shape: &[i64]) -> Value {
    match shape {
        [] | [_] => Value::Array(flat.to_vec()),
        [_, rest @ ..] => {
            let inner = shape_count(rest).unwrap_or(0);
            if inner == 0 {
                return Value::Array(Vec::new());
            }
            Value::Array(flat.chunks(inner).map(|c| nest(c, rest)).collect())
        }
    }
}

/// The JSON of one input; its binary data, if any, is appended to `binary`.
fn build_input(plan: &InputPlan, binary: &mut Vec<u8>) -> Value {
    let (name, datatype, shape, data) = match plan {
        InputPlan::Raw(v) => return v.clone(),
        InputPlan::Tensor {
            name,
            datatype,
            shape,
            data,
        } => (name, datatype, shape, data),
    };
    let mut obj = Map::new();
    obj.insert("name".into(), json!(name));
    obj.insert("shape".into(), json!(shape));
    obj.insert("datatype".into(), json!(datatype));
    // A shape too large to write out gets a couple of elements.
    let count = shape_count(shape).filter(|&c| c <= MATERIALIZE).unwrap_or(2);
    let size = DataType::parse(datatype).ok().and_then(DataType::size);
    match data {
        DataPlan::Matching { pool, nested, off } => {
            let n = adjust(count, *off);
            let flat: Vec<Value> = (0..n).map(|i| pool[i % pool.len()].clone()).collect();
            let v = if *nested && n == count {
                nest(&flat, shape)
            } else {
                Value::Array(flat)
            };
            obj.insert("data".into(), v);
        }
        DataPlan::Any(v) => {
            obj.insert("data".into(), v.clone());
        }
        DataPlan::Binary { fill, off } => {
            let start = binary.len();
            match size {
                Some(size) => {
                    let n = adjust(count * size, *off);
                    binary.extend((0..n).map(|i| fill[i % fill.len()]));
                }
                None => {
                    for i in 0..count {
                        let len = fill[i % fill.len()] as usize % 6;
                        binary.extend_from_slice(&(len as u32).to_le_bytes());
                        binary.extend(std::iter::repeat_n(b'a', len));
                    }
                    match off {
                        -1 => {
                            binary.pop();
                        }
                        1 => binary.push(0),
                        _ => {}
                    }
                }
            }
            obj.insert(
                "parameters".into(),
                json!({ "binary_data_size": binary.len().max(start) - start }),
            );
        }
        DataPlan::Declared { declared, actual } => {
            binary.extend(std::iter::repeat_n(0xab, *actual));
            obj.insert("parameters".into(), json!({ "binary_data_size": declared }));
        }
        DataPlan::Both => {
            obj.insert("data".into(), json!([0]));
            obj.insert("parameters".into(), json!({ "binary_data_size": 0 }));
        }
        DataPlan::Neither => {}
    }
    Value::Object(obj)
}

#[derive(Debug, Clone)]
enum HeaderPlan {
    Exact,
    Absent,
    Shifted(i8),
    Any(usize),
}

#[derive(Debug, Clone)]
struct RequestPlan {
    id: Option<Value>,
    parameters: Option<Value>,
    inputs: Vec<InputPlan>,
    outputs: Option<Value>,
    header: HeaderPlan,
    mutation: Mutation,
    /// Inputs' members in the order clients write them (`data` last, read in
    /// one pass) rather than sorted (`data` first, read as text, then parsed).
    client_order: bool,
}

fn parameters() -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        8 => Just(None),
        4 => any::<bool>().prop_map(|b| Some(json!({ "binary_data_output": b }))),
        1 => Just(Some(json!({ "classification": 2 }))),
        2 => prop::collection::btree_map(prop_oneof![4 => "[a-z_]{0,8}", 1 => ".{0,2000}"], json_value(), 0..4)
            .prop_map(|m| Some(Value::Object(m.into_iter().collect()))),
        1 => json_value().prop_map(Some),
    ]
    .boxed()
}

fn outputs() -> BoxedStrategy<Option<Value>> {
    let flag = prop_oneof![
        3 => Just(None),
        2 => any::<bool>().prop_map(|b| Some(Value::Bool(b))),
        1 => json_value().prop_map(Some),
    ];
    let output = (name(), flag).prop_map(|(n, flag)| match flag {
        None => json!({ "name": n }),
        Some(v) => json!({ "name": n, "parameters": { "binary_data": v } }),
    });
    prop_oneof![
        6 => Just(None),
        6 => prop::collection::vec(output, 0..4).prop_map(|v| Some(Value::Array(v))),
        1 => json_value().prop_map(Some),
    ]
    .boxed()
}

fn request_plan() -> BoxedStrategy<RequestPlan> {
    let header = prop_oneof![
        12 => Just(HeaderPlan::Exact),
        2 => Just(HeaderPlan::Absent),
        1 => (-3i8..=3).prop_map(HeaderPlan::Shifted),
        1 => (0usize..4096).prop_map(HeaderPlan::Any),
    ];
    (
        prop_oneof![4 => Just(None), 4 => name().prop_map(|n| Some(json!(n))), 1 => json_value().prop_map(Some)],
        parameters(),
        prop::collection::vec(input_plan(true), 0..4),
        outputs(),
        header,
        mutation(),
        prop::bool::weighted(0.75),
    )
        .prop_map(
            |(id, parameters, inputs, outputs, header, mutation, client_order)| RequestPlan {
                id,
                parameters,
                inputs,
                outputs,
                header,
                mutation,
                client_order,
            },
        )
        .boxed()
}

fn build_request(plan: &RequestPlan) -> (Vec<u8>, Option<usize>) {
    let mut binary = Vec::new();
    let inputs: Vec<Value> = plan.inputs.iter().map(|i| build_input(i, &mut binary)).collect();
    let mut obj = Map::new();
    if let Some(id) = &plan.id {
        obj.insert("id".into(), id.clone());
    }
    if let Some(p) = &plan.parameters {
        obj.insert("parameters".into(), p.clone());
    }
    obj.insert("inputs".into(), Value::Array(inputs));
    if let Some(o) = &plan.outputs {
        obj.insert("outputs".into(), o.clone());
    }
    let body = Value::Object(obj);
    let mut body = if plan.client_order {
        client_order(&body).into_bytes()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    let json_len = body.len();
    body.extend_from_slice(&binary);
    mutate(&mut body, &plan.mutation);
    let header = match plan.header {
        HeaderPlan::Exact => Some(json_len),
        HeaderPlan::Absent => None,
        HeaderPlan::Shifted(d) => Some((json_len as i64 + i64::from(d)).max(0) as usize),
        HeaderPlan::Any(n) => Some(n),
    };
    (body, header)
}

/// `v` as JSON with every object's `name`, `shape` and `datatype` first and
/// `data` last, the other members between them in sorted order (`serde_json`'s
/// maps sort all members, which puts `data` first).
fn client_order(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let rank = |k: &str| match k {
                "name" => 0,
                "shape" => 1,
                "datatype" => 2,
                "data" => 4,
                _ => 3,
            };
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by_key(|k| rank(k));
            let members: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), client_order(&m[k.as_str()])))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(client_order).collect::<Vec<_>>().join(",")),
        other => serde_json::to_string(other).unwrap(),
    }
}

/// Decodes with the small limit and with the server's default one.
fn http_decode(body: &[u8], header_len: Option<usize>) -> Result<(), TestCaseError> {
    for (limit, limit_bytes) in [(SMALL_LIMIT, SMALL_LIMIT * 8), (SERVER_LIMIT, 0)] {
        let bytes = Bytes::copy_from_slice(body);
        let (result, peak) = counting::peak(|| {
            switchyard::http::codec::decode_request(bytes, header_len, "m", None, limit, Instant::now())
        });
        match &result {
            Ok(decoded) => {
                for t in &decoded.request.inputs {
                    check_tensor(t, limit)?;
                }
            }
            Err(e) => check_message("HTTP decode", &e.message)?,
        }
        check_peak("HTTP decode", peak, body.len(), limit_bytes)?;
    }
    Ok(())
}

/// JSON-flavoured noise: JSON punctuation, keys of the protocol and numbers.
fn json_soup() -> BoxedStrategy<Vec<u8>> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\"inputs\"",
            "\"name\"",
            "\"shape\"",
            "\"datatype\"",
            "\"data\"",
            "\"parameters\"",
            "\"binary_data_size\"",
            "\"outputs\"",
            "\"binary_data\"",
            "\"FP32\"",
            "\"BYTES\"",
            "\"FP16\"",
            "true",
            "null",
            "-",
            "1e999",
            "18446744073709551616",
            "-9223372036854775809",
            "0.5",
            "\\u0000",
            "\\ud800",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,6}",
    ];
    (
        prop_oneof![Just(""), Just("{\"inputs\":[{"), Just("{\"inputs\":[{\"name\":\"x\",")],
        prop::collection::vec(token, 0..64),
    )
        .prop_map(|(start, tokens)| {
            let mut s = start.to_string();
            s.extend(tokens);
            s.into_bytes()
        })
        .boxed()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn http_structured_requests(plan in request_plan()) {
        let (body, header_len) = build_request(&plan);
        http_decode(&body, header_len)?;
    }

    #[test]
    fn http_arbitrary_bytes(
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), json_soup()],
        header in prop_oneof![Just(None), (0usize..2100).prop_map(Some)],
    ) {
        http_decode(&body, header)?;
    }
}

// ---------------------------------------------------------------------------
// gRPC: ModelInferRequest to the core's request.

#[derive(Debug, Clone)]
enum Contents {
    None,
    /// Any typed contents.
    Typed(pb::InferTensorContents),
    /// Typed contents in the datatype's field, the shape's count (off by `off`).
    Matching {
        fill: Vec<u64>,
        off: i8,
    },
    /// Any raw bytes.
    Raw(Vec<u8>),
    /// Raw bytes of the shape's size.
    RawMatching {
        fill: Vec<u8>,
        off: i8,
    },
    /// Raw and typed.
    Both,
}

#[derive(Debug, Clone)]
struct GrpcInputPlan {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    contents: Contents,
}

#[derive(Debug, Clone)]
enum RawCount {
    /// One per input when any input is raw.
    Natural,
    /// One more than that.
    Extra(Vec<u8>),
    /// One fewer.
    Fewer,
}

#[derive(Debug, Clone)]
struct GrpcPlan {
    /// Matching contents travel in raw_input_contents (else typed).
    raw: bool,
    id: String,
    model_version: String,
    parameters: HashMap<String, pb::InferParameter>,
    inputs: Vec<GrpcInputPlan>,
    outputs: Vec<(String, HashMap<String, pb::InferParameter>)>,
    raw_count: RawCount,
    mutation: Mutation,
}

fn infer_parameter() -> BoxedStrategy<pb::InferParameter> {
    use pb::infer_parameter::ParameterChoice as C;
    prop_oneof![
        Just(None),
        any::<bool>().prop_map(|b| Some(C::BoolParam(b))),
        any::<i64>().prop_map(|i| Some(C::Int64Param(i))),
        ".{0,16}".prop_map(|s| Some(C::StringParam(s))),
        any::<f64>().prop_map(|d| Some(C::DoubleParam(d))),
        any::<u64>().prop_map(|u| Some(C::Uint64Param(u))),
    ]
    .prop_map(|parameter_choice| pb::InferParameter { parameter_choice })
    .boxed()
}

fn grpc_parameters() -> BoxedStrategy<HashMap<String, pb::InferParameter>> {
    prop::collection::hash_map(
        prop_oneof![6 => "[a-z_]{0,8}", 1 => Just("classification".to_string()), 1 => ".{0,2000}"],
        infer_parameter(),
        0..3,
    )
    .boxed()
}

fn typed_contents() -> BoxedStrategy<pb::InferTensorContents> {
    use prop::collection::vec;
    (
        vec(any::<bool>(), 0..6),
        vec(any::<i32>(), 0..6),
        vec(any::<i64>(), 0..6),
        vec(any::<u32>(), 0..6),
        vec(any::<u64>(), 0..6),
        vec(any::<f32>(), 0..6),
        vec(any::<f64>(), 0..6),
        vec(vec(any::<u8>(), 0..6), 0..6),
    )
        .prop_map(|(b, i, i64s, u, u64s, f, d, by)| pb::InferTensorContents {
            bool_contents: b,
            int_contents: i,
            int64_contents: i64s,
            uint_contents: u,
            uint64_contents: u64s,
            fp32_contents: f,
            fp64_contents: d,
            bytes_contents: by,
        })
        .boxed()
}

fn grpc_plan() -> BoxedStrategy<GrpcPlan> {
    let contents = prop_oneof![
        1 => Just(Contents::None),
        2 => typed_contents().prop_map(Contents::Typed),
        4 => (prop::collection::vec(any::<u64>(), 1..16), off_by()).prop_map(|(fill, off)| Contents::Matching { fill, off }),
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Contents::Raw),
        4 => (prop::collection::vec(any::<u8>(), 1..16), off_by()).prop_map(|(fill, off)| Contents::RawMatching { fill, off }),
        1 => Just(Contents::Both),
    ];
    let input =
        (name(), datatype_name(), shape(), contents).prop_map(|(name, datatype, shape, contents)| GrpcInputPlan {
            name,
            datatype,
            shape,
            contents,
        });
    let raw_count = prop_oneof![
        8 => Just(RawCount::Natural),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(RawCount::Extra),
        1 => Just(RawCount::Fewer),
    ];
    (
        any::<bool>(),
        name(),
        prop_oneof![Just(String::new()), "[0-9]{1,3}"],
        grpc_parameters(),
        prop::collection::vec(input, 0..4),
        prop::collection::vec((name(), grpc_parameters()), 0..3),
        raw_count,
        mutation(),
    )
        .prop_map(
            |(raw, id, model_version, parameters, inputs, outputs, raw_count, mutation)| GrpcPlan {
                raw,
                id,
                model_version,
                parameters,
                inputs,
                outputs,
                raw_count,
                mutation,
            },
        )
        .boxed()
}

fn matching_contents(datatype: &str, count: usize, fill: &[u64]) -> pb::InferTensorContents {
    let v = |i: usize| fill[i % fill.len()];
    let mut c = pb::InferTensorContents::default();
    match datatype {
        "BOOL" => c.bool_contents = (0..count).map(|i| v(i) & 1 == 1).collect(),
        "UINT8" => c.uint_contents = (0..count).map(|i| (v(i) % 300) as u32).collect(),
        "UINT16" => c.uint_contents = (0..count).map(|i| (v(i) % 70_000) as u32).collect(),
        "UINT32" => c.uint_contents = (0..count).map(|i| v(i) as u32).collect(),
        "UINT64" => c.uint64_contents = (0..count).map(v).collect(),
        "INT8" => c.int_contents = (0..count).map(|i| (v(i) % 300) as i32 - 150).collect(),
        "INT16" => c.int_contents = (0..count).map(|i| (v(i) % 70_000) as i32 - 35_000).collect(),
        "INT64" => c.int64_contents = (0..count).map(|i| v(i) as i64).collect(),
        "FP32" | "FP16" | "BF16" => c.fp32_contents = (0..count).map(|i| f32::from_bits(v(i) as u32)).collect(),
        "FP64" => c.fp64_contents = (0..count).map(|i| f64::from_bits(v(i))).collect(),
        "BYTES" => {
            c.bytes_contents = (0..count)
                .map(|i| v(i).to_le_bytes()[..(v(i) % 9) as usize].to_vec())
                .collect()
        }
        _ => c.int_contents = (0..count).map(|i| v(i) as i32).collect(),
    }
    c
}

fn raw_matching(datatype: &str, count: usize, fill: &[u8], off: i8) -> Vec<u8> {
    let mut out = Vec::new();
    match DataType::parse(datatype).ok().and_then(DataType::size) {
        Some(size) => out.extend((0..adjust(count * size, off)).map(|i| fill[i % fill.len()])),
        None => {
            for i in 0..count {
                let len = fill[i % fill.len()] as usize % 6;
                out.extend_from_slice(&(len as u32).to_le_bytes());
                out.extend(std::iter::repeat_n(0xff, len));
            }
            match off {
                -1 => {
                    out.pop();
                }
                1 => out.push(7),
                _ => {}
            }
        }
    }
    out
}

fn build_grpc(plan: &GrpcPlan) -> pb::ModelInferRequest {
    let mut raw: Vec<Bytes> = Vec::new();
    let mut any_raw = false;
    let mut inputs = Vec::new();
    for p in &plan.inputs {
        let count = shape_count(&p.shape).filter(|&c| c <= MATERIALIZE).unwrap_or(2);
        let (contents, r) = match &p.contents {
            Contents::None => (None, None),
            Contents::Typed(c) => (Some(c.clone()), None),
            Contents::Matching { fill, off } if plan.raw => {
                let bytes: Vec<u8> = fill.iter().flat_map(|x| x.to_le_bytes()).collect();
                (None, Some(raw_matching(&p.datatype, count, &bytes, *off)))
            }
            Contents::Matching { fill, off } => (Some(matching_contents(&p.datatype, adjust(count, *off), fill)), None),
            Contents::Raw(b) => (None, Some(b.clone())),
            Contents::RawMatching { fill, off } if !plan.raw => {
                let words: Vec<u64> = fill.iter().map(|&b| u64::from(b)).collect();
                (Some(matching_contents(&p.datatype, adjust(count, *off), &words)), None)
            }
            Contents::RawMatching { fill, off } => (None, Some(raw_matching(&p.datatype, count, fill, *off))),
            Contents::Both => (Some(matching_contents(&p.datatype, count, &[1])), Some(vec![0; 4])),
        };
        any_raw |= r.is_some();
        raw.push(Bytes::from(r.unwrap_or_default()));
        inputs.push(req_pb::InferInputTensor {
            name: p.name.clone(),
            datatype: p.datatype.clone(),
            shape: p.shape.clone(),
            parameters: HashMap::new(),
            contents,
        });
    }
    if !any_raw {
        raw.clear();
    }
    match &plan.raw_count {
        RawCount::Natural => {}
        RawCount::Extra(b) => raw.push(Bytes::from(b.clone())),
        RawCount::Fewer => {
            raw.pop();
        }
    }
    pb::ModelInferRequest {
        model_name: "m".into(),
        model_version: plan.model_version.clone(),
        id: plan.id.clone(),
        parameters: plan.parameters.clone(),
        inputs,
        outputs: plan
            .outputs
            .iter()
            .map(|(name, parameters)| req_pb::InferRequestedOutputTensor {
                name: name.clone(),
                parameters: parameters.clone(),
            })
            .collect(),
        raw_input_contents: raw,
    }
}

fn check_grpc_result(
    result: &switchyard::error::Result<switchyard::service::InferRequest>,
    limit: usize,
) -> Result<(), TestCaseError> {
    match result {
        Ok(r) => {
            for t in &r.inputs {
                check_tensor(t, limit)?;
            }
        }
        Err(e) => check_message("gRPC decode", &e.message)?,
    }
    Ok(())
}

/// The server's path for wire bytes: protobuf decoding, then the conversion.
fn grpc_from_wire(wire: &[u8]) -> Result<(), TestCaseError> {
    for (limit, limit_bytes) in [(SMALL_LIMIT, SMALL_LIMIT * 8), (SERVER_LIMIT, 0)] {
        let (result, peak) = counting::peak(|| {
            pb::ModelInferRequest::decode(wire).map(|req| switchyard::grpc::decode_request(req, limit))
        });
        if let Ok(result) = &result {
            check_grpc_result(result, limit)?;
        }
        check_peak("gRPC wire decode", peak, wire.len(), limit_bytes)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn grpc_structured_requests(plan in grpc_plan()) {
        let req = build_grpc(&plan);
        let len = req.encoded_len();
        for (limit, limit_bytes) in [(SMALL_LIMIT, SMALL_LIMIT * 8), (SERVER_LIMIT, 0)] {
            let req = req.clone();
            let (result, peak) = counting::peak(|| switchyard::grpc::decode_request(req, limit));
            check_grpc_result(&result, limit)?;
            check_peak("gRPC decode", peak, len, limit_bytes)?;
        }
        let mut wire = req.encode_to_vec();
        mutate(&mut wire, &plan.mutation);
        grpc_from_wire(&wire)?;
    }

    #[test]
    fn grpc_arbitrary_bytes(wire in prop::collection::vec(any::<u8>(), 0..2048)) {
        grpc_from_wire(&wire)?;
    }
}

// ---------------------------------------------------------------------------
// config.pbtxt (text format) and the load API's JSON config.

const CONFIG_WORDS: &[&str] = &[
    "name",
    "platform",
    "backend",
    "max_batch_size",
    "input",
    "output",
    "dims",
    "data_type",
    "format",
    "reshape",
    "shape",
    "is_shape_tensor",
    "optional",
    "allow_ragged_batch",
    "instance_group",
    "kind",
    "count",
    "gpus",
    "dynamic_batching",
    "preferred_batch_size",
    "max_queue_delay_microseconds",
    "preserve_ordering",
    "priority_levels",
    "default_queue_policy",
    "timeout_action",
    "default_timeout_microseconds",
    "max_queue_size",
    "parameters",
    "key",
    "value",
    "string_value",
    "version_policy",
    "all",
    "latest",
    "num_versions",
    "specific",
    "versions",
    "optimization",
    "graph",
    "level",
    "execution_accelerators",
    "gpu_execution_accelerator",
    "cpu_execution_accelerator",
    "model_warmup",
    "batch_size",
    "inputs",
    "zero_data",
    "random_data",
    "input_data_file",
    "default_model_filename",
    "label_filename",
    "sequence_batching",
    "ensemble_scheduling",
    "step",
    "input_map",
    "output_map",
    "TYPE_FP32",
    "TYPE_INT32",
    "TYPE_STRING",
    "TYPE_BF16",
    "TYPE_INVALID",
    "KIND_CPU",
    "KIND_GPU",
    "KIND_AUTO",
    "REJECT",
    "DELAY",
    "true",
    "false",
    "inf",
    "-inf",
    "nan",
    "\"onnxruntime_onnx\"",
    "[type.googleapis.com/inference.ModelConfig]",
    "[type.googleapis.com/inference.ModelInput]",
    "[inference.nope]",
    "[a.b/c]",
];

fn pbtxt_soup() -> BoxedStrategy<String> {
    let token = prop_oneof![
        8 => prop::sample::select(CONFIG_WORDS.to_vec()).prop_map(str::to_string),
        6 => prop::sample::select(vec!["{", "}", "[", "]", "<", ">", ":", ",", ";", "-", "."]).prop_map(str::to_string),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| format!("0x{n:x}")),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        2 => "\"([a-z \\[\\]{}]|\\\\[nt\"'x0-9]){0,8}\"",
        1 => "'[a-z]{0,4}'",
        1 => "#[^\n]{0,10}\n",
        1 => "[a-z_]{100,3000}",
        1 => "\"[a-z]{100,3000}\"",
        1 => ".{0,4}",
    ];
    prop::collection::vec((token, prop_oneof![Just(" "), Just(""), Just("\n")]), 0..80)
        .prop_map(|tokens| tokens.into_iter().flat_map(|(t, sep)| [t, sep.to_string()]).collect())
        .boxed()
}

/// A config built from real fields with random values, then mutated.
fn pbtxt_structured() -> BoxedStrategy<String> {
    let io = (
        prop_oneof![Just("input"), Just("output")],
        name(),
        prop::sample::select(vec![
            "TYPE_FP32",
            "TYPE_INT32",
            "TYPE_STRING",
            "TYPE_FP16",
            "TYPE_NOPE",
            "3",
        ]),
        prop::collection::vec(dim(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(what, name, dt, dims, colon)| {
            let dims: Vec<String> = dims.iter().map(i64::to_string).collect();
            format!(
                "{what}{} [ {{ name: {name:?} data_type: {dt} dims: [ {} ] }} ]\n",
                if colon { ":" } else { "" },
                dims.join(", ")
            )
        });
    let field = prop_oneof![
        name().prop_map(|n| format!("name: {n:?}\n")),
        any::<i64>().prop_map(|n| format!("max_batch_size: {n}\n")),
        io,
        (
            prop::sample::select(vec!["KIND_CPU", "KIND_GPU", "KIND_AUTO", "KIND_X"]),
            any::<i32>()
        )
            .prop_map(|(k, c)| format!("instance_group [ {{ kind: {k} count: {c} }} ]\n")),
        prop::collection::vec(any::<i32>(), 0..4).prop_map(|v| format!(
            "dynamic_batching {{ preferred_batch_size: {v:?} max_queue_delay_microseconds: 100 }}\n"
        )),
        (name(), name()).prop_map(|(k, v)| format!("parameters {{ key: {k:?} value: {{ string_value: {v:?} }} }}\n")),
        Just("version_policy: { all { } }\n".to_string()),
        any::<i64>().prop_map(|n| format!("version_policy {{ latest {{ num_versions: {n} }} }}\n")),
        Just("optimization { graph { level: 1 } }\n".to_string()),
        Just("[type.googleapis.com/inference.ModelConfig] { name: \"x\" }\n".to_string()),
    ];
    (prop::collection::vec(field, 0..8), mutation())
        .prop_map(|(fields, m)| {
            let mut bytes = fields.concat().into_bytes();
            mutate(&mut bytes, &m);
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .boxed()
}

/// Deeply nested messages (`{ ... }`, `< ... >`, Any expansions).
fn pbtxt_nested() -> BoxedStrategy<String> {
    (
        prop::sample::select(vec![
            "[type.googleapis.com/inference.ModelConfig] {",
            "[type.googleapis.com/inference.ModelConfig] <",
            "optimization {",
            "input {",
            "{",
        ]),
        1usize..3000,
        any::<bool>(),
    )
        .prop_map(|(open, depth, closed)| {
            let mut s = open.repeat(depth);
            if closed {
                s.push_str(&"}".repeat(depth));
            }
            s
        })
        .boxed()
}

fn check_config(
    what: &str,
    text: &str,
    parse: fn(&str) -> Result<pb::ModelConfig, String>,
) -> Result<(), TestCaseError> {
    // The first parse builds the descriptor pool, once per process: not the input's doing.
    let _ = parse("");
    let (result, peak) = counting::peak(|| parse(text));
    if let Err(e) = &result {
        check_message(what, e)?;
    }
    check_peak(what, peak, text.len(), 0)
}

/// A config's JSON as the load API takes it, mutated.
fn config_json() -> BoxedStrategy<String> {
    let base = prop_oneof![
        Just(json!({})),
        Just(
            json!({"name": "m", "max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [16]}]})
        ),
        Just(
            json!({"instance_group": [{"kind": "KIND_CPU", "count": 2}], "dynamic_batching": {"preferred_batch_size": [4, 8]}})
        ),
        Just(json!({"parameters": {"k": {"string_value": "v"}}, "version_policy": {"latest": {"num_versions": 1}}})),
    ];
    let key = prop_oneof![
        prop::sample::select(CONFIG_WORDS.to_vec()).prop_map(str::to_string),
        "[a-z_]{0,8}",
        ".{0,2000}",
    ];
    (base, prop::collection::vec((key, json_value()), 0..4), mutation())
        .prop_map(|(mut base, extra, m)| {
            if let Value::Object(obj) = &mut base {
                obj.extend(extra);
            }
            let mut bytes = serde_json::to_vec(&base).unwrap();
            mutate(&mut bytes, &m);
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .boxed()
}

fn nested_json() -> BoxedStrategy<String> {
    (
        1usize..3000,
        prop::sample::select(vec!["{\"optimization\":", "[", "{\"a\":"]),
    )
        .prop_map(|(depth, open)| open.repeat(depth))
        .boxed()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn pbtxt_text(text in prop_oneof![
        3 => pbtxt_structured(),
        3 => pbtxt_soup(),
        1 => pbtxt_nested(),
        1 => ".{0,2048}",
        1 => prop::collection::vec(any::<u8>(), 0..2048).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        check_config("config.pbtxt", &text, config::parse_text)?;
    }

    #[test]
    fn config_json_override(text in prop_oneof![
        4 => config_json(),
        1 => nested_json(),
        1 => ".{0,2048}",
        1 => json_value().prop_map(|v| v.to_string()),
    ]) {
        check_config("config JSON", &text, config::parse_json)?;
    }
}

// ---------------------------------------------------------------------------
// Golden-set case files.

fn golden_case() -> BoxedStrategy<Vec<u8>> {
    let output = (
        name(),
        prop_oneof![Just(None), shape().prop_map(Some)],
        prop_oneof![Just(None), datatype_name().prop_map(Some)],
        prop_oneof![
            4 => prop::collection::vec(float().prop_map(Value::from), 0..8).prop_map(Value::Array),
            1 => prop::collection::vec(".{0,8}".prop_map(Value::from), 0..8).prop_map(Value::Array),
            1 => json_value(),
        ],
    )
        .prop_map(|(n, shape, dt, data)| {
            let mut o = Map::new();
            o.insert("name".into(), json!(n));
            if let Some(s) = shape {
                o.insert("shape".into(), json!(s));
            }
            if let Some(d) = dt {
                o.insert("datatype".into(), json!(d));
            }
            o.insert("data".into(), data);
            Value::Object(o)
        });
    let tolerance = prop_oneof![
        Just(None),
        (scalar(), scalar()).prop_map(|(a, r)| Some(json!({ "absolute": a, "relative": r }))),
        json_value().prop_map(Some),
    ];
    let extra =
        prop_oneof![4 => Just(None), 1 => (prop_oneof!["[a-z]{1,8}", ".{0,2000}"], json_value()).prop_map(Some)];
    (
        prop::collection::vec(input_plan(false), 0..3),
        prop::collection::vec(output, 0..3),
        tolerance,
        extra,
        mutation(),
    )
        .prop_map(|(inputs, outputs, tolerance, extra, m)| {
            let mut unused = Vec::new();
            let inputs: Vec<Value> = inputs.iter().map(|i| build_input(i, &mut unused)).collect();
            let mut obj = Map::new();
            obj.insert("inputs".into(), Value::Array(inputs));
            obj.insert("outputs".into(), Value::Array(outputs));
            if let Some(t) = tolerance {
                obj.insert("tolerance".into(), t);
            }
            if let Some((k, v)) = extra {
                obj.insert(k, v);
            }
            let mut bytes = serde_json::to_vec(&Value::Object(obj)).unwrap();
            mutate(&mut bytes, &m);
            bytes
        })
        .boxed()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn golden_case_files(raw in prop_oneof![
        4 => golden_case(),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
        1 => json_soup(),
    ]) {
        for (limit, limit_bytes) in [(SMALL_LIMIT, SMALL_LIMIT * 8), (SERVER_LIMIT, 0)] {
            let (result, peak) = counting::peak(|| golden::parse_case(&raw, "case", limit));
            match &result {
                Ok(case) => {
                    for t in &case.inputs {
                        check_tensor(t, limit)?;
                    }
                    prop_assert!(case.absolute >= 0.0 && case.relative >= 0.0);
                }
                Err(e) => check_message("golden case", e)?,
            }
            check_peak("golden case", peak, raw.len(), limit_bytes)?;
        }
    }
}

// ---------------------------------------------------------------------------
// Drift reference profiles.

fn float() -> BoxedStrategy<f64> {
    prop_oneof![4 => -10.0f64..10.0, 1 => any::<f64>(), 1 => Just(0.0)].boxed()
}

fn feature_profile() -> BoxedStrategy<FeatureProfile> {
    (
        name(),
        any::<u64>(),
        float(),
        float(),
        prop::collection::vec(float(), 0..12),
        any::<bool>(),
        off_by(),
    )
        .prop_map(|(feature, count, mean, std, mut edges, sorted, off)| {
            if sorted {
                edges.sort_by(f64::total_cmp);
                edges.dedup();
            }
            let n = adjust(edges.len() + 1, off);
            FeatureProfile {
                feature,
                count,
                mean,
                std,
                proportions: vec![1.0 / n.max(1) as f64; n],
                edges,
            }
        })
        .boxed()
}

fn profile_json() -> BoxedStrategy<String> {
    let tensor = (
        name(),
        any::<bool>(),
        datatype_name(),
        prop::collection::vec(feature_profile(), 0..3),
        prop_oneof![Just(None), prop::collection::vec(float(), 0..6).prop_map(Some)],
    )
        .prop_map(|(name, input, datatype, features, classes)| TensorProfile {
            name,
            role: if input { Role::Input } else { Role::Output },
            datatype,
            features,
            classes,
        });
    (
        prop_oneof![8 => Just(PROFILE_FORMAT.to_string()), 1 => name()],
        any::<usize>(),
        any::<bool>(),
        any::<u64>(),
        prop::collection::vec(tensor, 0..3),
        mutation(),
    )
        .prop_map(|(format, max_features, batched, samples, tensors, m)| {
            let p = Profile {
                format,
                max_features,
                batched,
                samples,
                tensors,
            };
            let mut bytes = p.to_json().into_bytes();
            mutate(&mut bytes, &m);
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .boxed()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn drift_profiles(text in prop_oneof![
        4 => profile_json(),
        1 => ".{0,2048}",
        1 => json_value().prop_map(|v| v.to_string()),
    ]) {
        let (result, peak) = counting::peak(|| Profile::from_json(&text));
        match &result {
            Ok(p) => {
                prop_assert!(p.validate().is_ok());
                for f in p.tensors.iter().flat_map(|t| &t.features) {
                    prop_assert_eq!(f.proportions.len(), f.edges.len() + 1);
                }
            }
            Err(e) => check_message("drift profile", e)?,
        }
        check_peak("drift profile", peak, text.len(), 0)?;
    }
}

// ---------------------------------------------------------------------------
// Admin token files.

#[derive(Debug, Clone)]
enum TokenLine {
    Blank,
    Comment(String),
    Bare(String),
    WithId(String, String),
    Other(String),
}

fn token() -> BoxedStrategy<String> {
    prop_oneof![4 => "[A-Za-z0-9_.~+/=-]{16,40}", 1 => "[A-Za-z0-9]{0,16}", 1 => "[^\n:]{0,40}"].boxed()
}

fn token_file() -> BoxedStrategy<Vec<TokenLine>> {
    let line = prop_oneof![
        1 => Just(TokenLine::Blank),
        1 => "[^\n]{0,20}".prop_map(|c| TokenLine::Comment(format!("#{c}"))),
        3 => token().prop_map(TokenLine::Bare),
        3 => ("[a-z]{1,8}", token()).prop_map(|(id, t)| TokenLine::WithId(id, t)),
        1 => "[^\n]{0,60}".prop_map(TokenLine::Other),
    ];
    prop::collection::vec(line, 0..6).boxed()
}

fn render(lines: &[TokenLine]) -> String {
    lines
        .iter()
        .map(|l| match l {
            TokenLine::Blank => String::new(),
            TokenLine::Comment(c) | TokenLine::Other(c) | TokenLine::Bare(c) => c.clone(),
            TokenLine::WithId(id, t) => format!("{id}:{t}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn caller(authorization: Option<String>) -> Caller {
    Caller {
        peer: Some("127.0.0.1:1".into()),
        authorization,
        admin_listener: false,
        api_token: None,
    }
}

fn admin_case(dir: &std::path::Path, content: &[u8], lines: &[TokenLine]) -> Result<(), TestCaseError> {
    let path = dir.join("tokens");
    std::fs::write(&path, content).unwrap();
    let (result, peak) = counting::peak(|| AdminAuth::new(Some(&path), None, false));
    check_peak("admin tokens", peak, content.len(), 0)?;
    match result {
        Err(e) => {
            let message = e.to_string();
            check_message("admin tokens", &message)?;
            // A token, or anything that could be one, never appears in an error.
            for l in lines {
                if let TokenLine::Bare(t) | TokenLine::WithId(_, t) | TokenLine::Other(t) = l {
                    let t = t.trim();
                    prop_assert!(t.len() < 12 || !message.contains(t), "error shows a token: {message}");
                }
            }
        }
        Ok(auth) => {
            // Every well-formed token line authorizes, as its id (the last
            // line's where lines repeat a token).
            let mut expected: Vec<(String, &str)> = Vec::new();
            for (n, l) in lines.iter().enumerate() {
                let (id, t) = match l {
                    TokenLine::WithId(id, t) => (id.clone(), t.trim()),
                    TokenLine::Bare(t) if !t.trim().is_empty() && !t.trim_start().starts_with('#') => {
                        (format!("line{}", n + 1), t.trim())
                    }
                    _ => continue,
                };
                expected.retain(|(_, other)| *other != t);
                expected.push((id, t));
            }
            for (id, t) in expected {
                let (actor, ok) = auth.authorize(&caller(Some(format!("Bearer {t}"))));
                prop_assert!(ok.is_ok(), "token of '{}' refused", id);
                prop_assert_eq!(actor.name(), format!("token:{id}"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn admin_token_files(lines in token_file()) {
        let dir = tempfile::tempdir().unwrap();
        admin_case(dir.path(), render(&lines).as_bytes(), &lines)?;
    }

    #[test]
    fn admin_token_files_arbitrary_bytes(content in prop::collection::vec(any::<u8>(), 0..1024)) {
        let dir = tempfile::tempdir().unwrap();
        admin_case(dir.path(), &content, &[])?;
    }

    #[test]
    fn admin_authorization_headers(header in prop_oneof![
        Just(None),
        ".{0,64}".prop_map(Some),
        "[^\n]{0,40}".prop_map(|t| Some(format!("Bearer {t}"))),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "ci:0123456789abcdef0123\n").unwrap();
        let auth = AdminAuth::new(Some(&path), None, false).unwrap();
        let (actor, result) = auth.authorize(&caller(header.clone()));
        let presented = header.as_deref().and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
        if presented.map(str::trim) == Some("0123456789abcdef0123") {
            prop_assert!(result.is_ok());
            prop_assert_eq!(actor.name(), "token:ci");
        } else {
            let e = result.unwrap_err();
            check_message("authorize", &e.message)?;
            prop_assert!(!e.message.contains("0123456789abcdef"));
        }
    }
}

// ---------------------------------------------------------------------------
// Regressions: the smallest inputs of what the properties above found.

#[test]
fn deeply_nested_pbtxt_is_refused_not_a_stack_overflow() {
    // Any expansions let messages nest without end; the parser recursed once per level.
    let deep = "[type.googleapis.com/inference.ModelConfig] {".repeat(100_000);
    let e = config::parse_text(&deep).unwrap_err();
    assert!(e.contains("nested deeper than 64 levels"), "{e}");
    let e = config::parse_text(&"optimization <".repeat(65)).unwrap_err();
    assert!(e.contains("nested deeper"), "{e}");
    // At the limit the parser itself answers; braces in strings and comments do not count.
    let at_limit = format!(
        "{}{}",
        "[type.googleapis.com/inference.ModelConfig] {".repeat(64),
        "}".repeat(64)
    );
    assert!(!config::parse_text(&at_limit).unwrap_err().contains("nested"));
    let c = config::parse_text(&format!("name: \"{}\" # {}\n", "{".repeat(100), "<".repeat(100))).unwrap();
    assert_eq!(c.name.len(), 100);
}

fn assert_bounded(message: &str, expect: &str) {
    assert!(
        message.len() <= MAX_MESSAGE,
        "{} bytes: {}",
        message.len(),
        head(message, 300)
    );
    assert!(message.contains(expect), "{expect:?} not in {message}");
}

fn http_error(body: String) -> String {
    switchyard::http::codec::decode_request(Bytes::from(body), None, "m", None, SMALL_LIMIT, Instant::now())
        .unwrap_err()
        .message
}

#[test]
fn http_errors_do_not_echo_long_names_datatypes_or_shapes() {
    let long = "x".repeat(10_000);
    let e = http_error(format!(
        r#"{{"inputs":[{{"name":"{long}","shape":[1],"datatype":"FLOAT","data":[1]}}]}}"#
    ));
    assert_bounded(&e, "unknown datatype 'FLOAT'");
    assert!(e.contains("(10000 bytes)"), "{e}");
    let e = http_error(format!(
        r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"{long}","data":[1]}}]}}"#
    ));
    assert_bounded(&e, "unknown datatype");
    let dims = vec!["1"; 5000].join(",");
    let e = http_error(format!(
        r#"{{"inputs":[{{"name":"x","shape":[-1,{dims}],"datatype":"FP32","data":[1]}}]}}"#
    ));
    assert_bounded(&e, "negative dimension");
    assert!(e.contains("(5001 dimensions)"), "{e}");
    // serde_json quotes the string it did not expect.
    let e = http_error(format!(r#"{{"inputs":"{long}"}}"#));
    assert_bounded(&e, "invalid type: string");
    assert!(e.ends_with("line 1 column 10012"), "{e}");
    let e = http_error(format!(r#"{{"parameters":{{"{long}":[]}},"inputs":[]}}"#));
    assert_bounded(&e, "must be a string, number or boolean");
}

#[test]
fn grpc_errors_do_not_echo_long_names_datatypes_or_shapes() {
    let long = "y".repeat(10_000);
    let input = |name: &str, datatype: &str, shape: Vec<i64>| req_pb::InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        parameters: HashMap::new(),
        contents: None,
    };
    let request = |inputs, raw| pb::ModelInferRequest {
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    };
    let decode = |r| switchyard::grpc::decode_request(r, SMALL_LIMIT).unwrap_err().message;
    assert_bounded(
        &decode(request(vec![input(&long, &long, vec![1])], vec![])),
        "unknown datatype",
    );
    assert_bounded(
        &decode(request(vec![input(&long, "FP32", vec![1])], vec![])),
        "has no data",
    );
    let shape = vec![1; 5000];
    let e = decode(request(
        vec![input(&long, "FP32", shape)],
        vec![Bytes::from_static(b"abc")],
    ));
    assert_bounded(&e, "raw_input_contents has 3 bytes");
}

#[test]
fn config_errors_do_not_echo_long_field_names_or_tokens() {
    let long = "z".repeat(10_000);
    assert_bounded(&config::parse_text(&format!("{long}: 1")).unwrap_err(), "not found");
    assert_bounded(&config::parse_text(&format!("name {long}")).unwrap_err(), "expected");
    assert_bounded(
        &config::parse_json(&format!(r#"{{"{long}": 1}}"#)).unwrap_err(),
        "unrecognized field name",
    );
    assert_bounded(
        &config::parse_json(&format!(r#"{{"name": ["{long}"]}}"#)).unwrap_err(),
        "invalid type",
    );
}

#[test]
fn golden_and_profile_errors_do_not_echo_long_names() {
    let long = "w".repeat(10_000);
    let e = golden::parse_case(
        format!(r#"{{"inputs":[],"outputs":[],"{long}":1}}"#).as_bytes(),
        "c",
        16,
    )
    .unwrap_err();
    assert_bounded(&e, "unknown field");
    let e = golden::parse_case(
        format!(r#"{{"inputs":[],"outputs":[{{"name":"{long}","data":[{{}}]}}]}}"#).as_bytes(),
        "c",
        16,
    )
    .unwrap_err();
    assert_bounded(&e, "data must be numbers");
    let profile = |name: &str, format: &str| {
        format!(
            r#"{{"format":"{format}","max_features":1,"batched":true,"samples":1,"tensors":[{{"name":"{name}","role":"input","datatype":"FP32","features":[{{"feature":"0","count":1,"mean":0,"std":0,"edges":[1],"proportions":[1]}}]}}]}}"#
        )
    };
    assert_bounded(
        &Profile::from_json(&profile(&long, PROFILE_FORMAT)).unwrap_err(),
        "2 proportions",
    );
    assert_bounded(
        &Profile::from_json(&profile("t", &long)).unwrap_err(),
        "unsupported drift profile format",
    );
    assert_bounded(
        &Profile::from_json(&format!(r#"{{"format":{{"{long}":1}}}}"#)).unwrap_err(),
        "invalid type",
    );
}

// ---------------------------------------------------------------------------
// Traffic policy files (`<model>/traffic.yaml`) and their JSON overrides.

fn policy_scalar() -> BoxedStrategy<String> {
    prop_oneof![
        (-3i64..5).prop_map(|v| v.to_string()),
        Just("beta".to_string()),
        Just("'a b'".to_string()),
        (-1e3f64..1e3).prop_map(|v| v.to_string()),
        Just("1e400".to_string()),
        Just(".nan".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("~".to_string()),
        "[a-z_]{0,8}",
    ]
    .boxed()
}

/// Mostly well-formed policies with random values, unknown keys and nesting.
fn policy_yaml() -> BoxedStrategy<String> {
    let key = prop_oneof![
        Just("default"),
        Just("canary"),
        Just("sticky_key"),
        Just("shadow"),
        Just("target"),
        Just("weight"),
        Just("colour"),
    ];
    let canary = prop::collection::vec((policy_scalar(), policy_scalar()), 0..20).prop_map(|c| {
        let items: Vec<String> = c.iter().map(|(t, w)| format!("{{target: {t}, weight: {w}}}")).collect();
        format!("canary: [{}]\n", items.join(", "))
    });
    let shadow = (
        policy_scalar(),
        policy_scalar(),
        policy_scalar(),
        policy_scalar(),
        policy_scalar(),
        policy_scalar(),
    )
        .prop_map(|(t, m, r, k, f, g)| {
            format!(
                "shadow: {{ target: {t}, model: {m}, sample_rate: {r}, compare: {{ top_k: {k} }}, \
                 in_flight: {f}, promote: {{ min_pairs: {g}, on_pass: {m} }} }}\n"
            )
        });
    let extra = prop::collection::vec((key, policy_scalar()), 0..4)
        .prop_map(|kv| kv.iter().map(|(k, v)| format!("{k}: {v}\n")).collect::<String>());
    (policy_scalar(), canary, shadow, extra, any::<bool>())
        .prop_map(|(d, c, s, e, sticky)| {
            let sticky = if sticky { "sticky_key: { header: x-user }\n" } else { "" };
            format!("default: {d}\n{c}{s}{sticky}{e}")
        })
        .boxed()
}

fn policy_case(text: &str) -> Result<(), TestCaseError> {
    use switchyard::traffic::TrafficPolicy;
    const FILE: &str = "m/traffic.yaml";
    let (result, peak) = counting::peak(|| TrafficPolicy::from_yaml(text, FILE));
    // The YAML parser (libyaml's port) starts with fixed buffers of about 64 KiB.
    check_peak("traffic.yaml", peak, text.len(), 64 << 10)?;
    match result {
        Ok(p) => {
            // What parses is valid, and survives the JSON round trip of overrides and metadata.
            prop_assert!(p.validate(FILE).is_ok());
            let back = TrafficPolicy::from_json(&p.to_json(), "override");
            prop_assert!(back.is_ok(), "{:?}", back);
        }
        Err(e) => {
            check_message("traffic.yaml", &e)?;
            prop_assert!(e.starts_with(FILE), "the error names the file: {e}");
        }
    }
    let (json, _) = counting::peak(|| TrafficPolicy::from_json(text, "override"));
    if let Err(e) = json {
        check_message("traffic override", &e)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn traffic_policy_files(text in policy_yaml()) {
        policy_case(&text)?;
    }

    #[test]
    fn traffic_policy_arbitrary_bytes(content in prop::collection::vec(any::<u8>(), 0..1024)) {
        policy_case(&String::from_utf8_lossy(&content))?;
    }
}

#[test]
fn a_small_body_declaring_a_large_shape_allocates_little_when_read_in_one_pass() {
    // `data` last: read in the same pass as the body, which does not know the body's size.
    let body: &'static [u8] = br#"{"inputs":[{"name":"x","shape":[65536],"datatype":"FP64","data":[1]}]}"#;
    let (result, peak) = counting::peak(|| {
        switchyard::http::codec::decode_request(Bytes::from_static(body), None, "m", None, SERVER_LIMIT, Instant::now())
    });
    assert!(
        result
            .unwrap_err()
            .message
            .contains("has 1 elements but the shape holds 65536")
    );
    check_peak("HTTP decode", peak, body.len(), 0).unwrap();
}
