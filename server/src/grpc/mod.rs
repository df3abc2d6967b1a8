//! The gRPC frontend: `inference.GRPCInferenceService`, wire-compatible with
//! Triton's. Methods convert messages, call the service and convert back.

mod layer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use switchyard_proto::inference::{self as pb, grpc_inference_service_server::GrpcInferenceService};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::access::GrantedToken;
use crate::access::admin::Caller;
use crate::error::{Error, Result};
use crate::metrics::{Protocol, Traffic};
use crate::service::{InferRequest, InferResponse, LoadParam, Param, Service};
use crate::tensor::{DataType, Tensor, TensorData, decode_bytes_elements, echo, echo_shape, element_count};
use crate::trace::{TRACEPARENT, TraceContext};

use layer::Authority;
pub use layer::{AccessLayer, AccessService};
pub use pb::grpc_inference_service_server::GrpcInferenceServiceServer;

/// Requests of one `ModelStreamInfer` stream computed at the same time.
const STREAM_CONCURRENCY: usize = 64;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(
            Code::from_i32(e.kind.mapping().grpc_code),
            e.client_message().into_owned(),
        )
    }
}

/// tonic reports a message over the size limit as OUT_OF_RANGE; gRPC's own
/// servers (and Triton) say RESOURCE_EXHAUSTED, which is what clients retry
/// on or report. Rewrites that one status in trailers-only responses.
pub fn too_large_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("message%20length%20too%20large") || m.contains("message length too large"));
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// The tonic service over the core.
#[derive(Debug, Clone)]
pub struct GrpcService {
    service: Service,
}

impl GrpcService {
    /// Wraps `service`.
    pub fn new(service: Service) -> GrpcService {
        GrpcService { service }
    }

    async fn infer(
        &self,
        req: pb::ModelInferRequest,
        trace: Option<TraceContext>,
        traffic: Traffic,
        headers: Arc<http::HeaderMap>,
    ) -> Result<(pb::ModelInferResponse, Option<TraceContext>)> {
        let decoded = decode_request(req, self.service.max_tensor_elements());
        let mut request = self.service.decoded(Protocol::Grpc, traffic, decoded)?;
        request.trace = trace;
        request.traffic = traffic;
        request.headers = Some(headers);
        let response = self.service.infer(request).await?;
        let trace = response.trace;
        Ok((encode_response(response), trace))
    }
}

impl GrpcService {
    /// Production or mirrored: the call's `:authority` (kept by [`AccessLayer`])
    /// and the `--shadow-header` metadata.
    fn traffic_of<T>(&self, req: &Request<T>) -> Traffic {
        let host = req.extensions().get::<Authority>().map(|a| a.0.as_str());
        let marker = req
            .metadata()
            .get(self.service.shadow_header())
            .and_then(|v| v.to_str().ok());
        crate::service::traffic_of(host, marker)
    }
}

fn opt(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

/// Converts a `ModelInferRequest`, checking raw contents against shapes.
pub fn decode_request(req: pb::ModelInferRequest, max_elements: usize) -> Result<InferRequest> {
    let received = Instant::now();
    let raw = req.raw_input_contents;
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(Error::invalid(format!(
            "expected {} raw_input_contents (one per input), got {}",
            req.inputs.len(),
            raw.len()
        )));
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, input) in req.inputs.into_iter().enumerate() {
        let name = input.name;
        let shown = echo(&name);
        let datatype = DataType::parse(&input.datatype).map_err(|e| Error::invalid(format!("input '{shown}': {e}")))?;
        let count = element_count(&input.shape, max_elements)
            .map_err(|e| Error::new(e.kind, format!("input '{shown}': {}", e.message)))?;
        let typed = input.contents.filter(|c| !is_empty(c));
        let data = match (raw.get(i), typed) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(format!(
                    "input '{shown}': contents and raw_input_contents cannot both be used"
                )));
            }
            (Some(bytes), None) => raw_data(bytes, datatype, count, &input.shape, &name)?,
            (None, Some(c)) => typed_data(c, datatype, count, &shown)?,
            (None, None) if count == 0 => empty_data(datatype),
            (None, None) => return Err(Error::invalid(format!("input '{shown}' has no data"))),
        };
        drop(shown);
        inputs.push(Tensor {
            name,
            datatype,
            shape: input.shape,
            data,
        });
    }
    crate::service::check_extensions(
        req.parameters.keys().map(String::as_str),
        req.outputs.iter().flat_map(|o| o.parameters.keys()).map(String::as_str),
    )?;
    let parameters = convert_params(req.parameters);
    Ok(InferRequest {
        model: req.model_name,
        version: opt(&req.model_version).map(str::to_string),
        id: req.id,
        inputs,
        outputs: req.outputs.into_iter().map(|o| o.name).collect(),
        parameters,
        protocol: Protocol::Grpc,
        received,
        trace: None,
        traffic: crate::service::Traffic::Production,
        headers: None,
        raw_input: None,
    })
}

fn empty_data(datatype: DataType) -> TensorData {
    match datatype {
        DataType::Bytes => TensorData::Bytes(Vec::new()),
        _ => TensorData::Fixed(Bytes::new()),
    }
}

fn is_empty(c: &pb::InferTensorContents) -> bool {
    c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty()
}

fn raw_data(bytes: &Bytes, datatype: DataType, count: usize, shape: &[i64], name: &str) -> Result<TensorData> {
    match datatype.size() {
        None => Ok(TensorData::Bytes(decode_bytes_elements(bytes, count, name)?)),
        Some(size) if bytes.len() == count * size => Ok(TensorData::Fixed(bytes.clone())),
        Some(size) => Err(Error::invalid(format!(
            "input '{}': raw_input_contents has {} bytes but shape {} of {} needs {}",
            echo(name),
            bytes.len(),
            echo_shape(shape),
            datatype.as_str(),
            count * size
        ))),
    }
}

fn typed_data(c: pb::InferTensorContents, datatype: DataType, count: usize, name: &str) -> Result<TensorData> {
    let wrong_count = |n: usize| {
        Error::invalid(format!(
            "input '{name}': contents hold {n} {} elements but the shape holds {count}",
            datatype.as_str()
        ))
    };
    macro_rules! fixed {
        ($field:expr, $conv:expr) => {{
            let v = $field;
            if v.len() != count {
                return Err(wrong_count(v.len()));
            }
            let mut out = Vec::with_capacity(count * datatype.size().unwrap_or(1));
            for x in v {
                out.extend_from_slice(&$conv(x)?);
            }
            TensorData::Fixed(Bytes::from(out))
        }};
    }
    let range = |x: i64, lo: i64, hi: i64| -> Result<i64> {
        if x < lo || x > hi {
            Err(Error::invalid(format!(
                "input '{name}': {x} is out of range for {}",
                datatype.as_str()
            )))
        } else {
            Ok(x)
        }
    };
    Ok(match datatype {
        DataType::Bool => fixed!(c.bool_contents, |x: bool| Ok::<_, Error>([u8::from(x)])),
        DataType::Uint8 => fixed!(c.uint_contents, |x: u32| range(x as i64, 0, 255)
            .map(|v| (v as u8).to_le_bytes())),
        DataType::Uint16 => {
            fixed!(c.uint_contents, |x: u32| range(x as i64, 0, 65535)
                .map(|v| (v as u16).to_le_bytes()))
        }
        DataType::Uint32 => fixed!(c.uint_contents, |x: u32| Ok::<_, Error>(x.to_le_bytes())),
        DataType::Uint64 => fixed!(c.uint64_contents, |x: u64| Ok::<_, Error>(x.to_le_bytes())),
        DataType::Int8 => fixed!(c.int_contents, |x: i32| range(x as i64, -128, 127)
            .map(|v| (v as i8).to_le_bytes())),
        DataType::Int16 => {
            fixed!(c.int_contents, |x: i32| range(x as i64, -32768, 32767)
                .map(|v| (v as i16).to_le_bytes()))
        }
        DataType::Int32 => fixed!(c.int_contents, |x: i32| Ok::<_, Error>(x.to_le_bytes())),
        DataType::Int64 => fixed!(c.int64_contents, |x: i64| Ok::<_, Error>(x.to_le_bytes())),
        DataType::Fp32 => fixed!(c.fp32_contents, |x: f32| Ok::<_, Error>(x.to_le_bytes())),
        DataType::Fp64 => fixed!(c.fp64_contents, |x: f64| Ok::<_, Error>(x.to_le_bytes())),
        DataType::Bytes => {
            if c.bytes_contents.len() != count {
                return Err(wrong_count(c.bytes_contents.len()));
            }
            TensorData::Bytes(c.bytes_contents.into_iter().map(Bytes::from).collect())
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(Error::invalid(format!(
                "input '{name}': {} tensors can only be sent in raw_input_contents",
                datatype.as_str()
            )));
        }
    })
}

fn convert_params(params: HashMap<String, pb::InferParameter>) -> Vec<(String, Param)> {
    use pb::infer_parameter::ParameterChoice as C;
    params
        .into_iter()
        .filter_map(|(k, v)| {
            let p = match v.parameter_choice? {
                C::BoolParam(b) => Param::Bool(b),
                C::Int64Param(i) => Param::Int(i),
                C::StringParam(s) => Param::Str(s),
                C::DoubleParam(d) => Param::Double(d),
                C::Uint64Param(u) => Param::Uint(u),
            };
            Some((k, p))
        })
        .collect()
}

/// Converts a response; every output travels in `raw_output_contents`.
pub fn encode_response(resp: InferResponse) -> pb::ModelInferResponse {
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    let mut raw = Vec::with_capacity(resp.outputs.len());
    for t in resp.outputs {
        raw.push(t.to_raw());
        outputs.push(pb::model_infer_response::InferOutputTensor {
            name: t.name,
            datatype: t.datatype.as_str().to_string(),
            shape: t.shape,
            ..Default::default()
        });
    }
    pb::ModelInferResponse {
        model_name: resp.model,
        model_version: resp.version,
        id: resp.id,
        parameters: HashMap::new(),
        outputs,
        raw_output_contents: raw,
    }
}

fn tensor_meta(ts: Vec<crate::service::TensorMeta>) -> Vec<pb::model_metadata_response::TensorMetadata> {
    ts.into_iter()
        .map(|t| pb::model_metadata_response::TensorMetadata {
            name: t.name,
            datatype: t.datatype.as_str().to_string(),
            shape: t.shape,
        })
        .collect()
}

type GrpcResult<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl GrpcInferenceService for GrpcService {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> GrpcResult<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse {
            live: self.service.live(),
        }))
    }

    async fn server_ready(&self, _: Request<pb::ServerReadyRequest>) -> GrpcResult<pb::ServerReadyResponse> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.service.ready(),
        }))
    }

    async fn model_ready(&self, req: Request<pb::ModelReadyRequest>) -> GrpcResult<pb::ModelReadyResponse> {
        let r = req.into_inner();
        Ok(Response::new(pb::ModelReadyResponse {
            ready: self.service.model_ready(&r.name, opt(&r.version)),
        }))
    }

    async fn server_metadata(&self, _: Request<pb::ServerMetadataRequest>) -> GrpcResult<pb::ServerMetadataResponse> {
        let m = self.service.server_metadata();
        Ok(Response::new(pb::ServerMetadataResponse {
            name: m.name.to_string(),
            version: m.version.to_string(),
            extensions: m.extensions.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(&self, req: Request<pb::ModelMetadataRequest>) -> GrpcResult<pb::ModelMetadataResponse> {
        let r = req.into_inner();
        let m = self.service.model_metadata(&r.name, opt(&r.version))?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: tensor_meta(m.inputs),
            outputs: tensor_meta(m.outputs),
            properties: m.parameters.into_iter().collect(),
        }))
    }

    async fn model_infer(&self, req: Request<pb::ModelInferRequest>) -> GrpcResult<pb::ModelInferResponse> {
        let (trace, traffic) = (trace_of(&req), self.traffic_of(&req));
        // Moved, not copied: the metadata is where a traffic policy's sticky key may be.
        let (metadata, _, message) = req.into_parts();
        let headers = Arc::new(metadata.into_headers());
        let (response, trace) = self.infer(message, trace, traffic, headers).await?;
        let routed_to = response.model_version.parse().ok();
        let mut response = Response::new(response);
        if let Some(value) = trace.and_then(|t| t.to_string().parse().ok()) {
            response.metadata_mut().insert(TRACEPARENT, value);
        }
        if let Some(value) = routed_to {
            response.metadata_mut().insert(crate::service::ROUTED_TO, value);
        }
        Ok(response)
    }

    type ModelStreamInferStream = ReceiverStream<std::result::Result<pb::ModelStreamInferResponse, Status>>;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<pb::ModelInferRequest>>,
    ) -> GrpcResult<Self::ModelStreamInferStream> {
        let (trace, traffic) = (trace_of(&req), self.traffic_of(&req));
        let (metadata, _, mut inbound) = req.into_parts();
        let headers = Arc::new(metadata.into_headers());
        // Bounded: a slow reader stops the stream from reading more requests.
        let (tx, rx) = mpsc::channel(STREAM_CONCURRENCY);
        let permits = Arc::new(Semaphore::new(STREAM_CONCURRENCY));
        let this = self.clone();
        // The server owns the stream's tasks: they end with the stream, or at shutdown.
        let background = self.service.background().clone();
        let stopping = background.stopping().clone();
        background.clone().spawn(async move {
            loop {
                let request = tokio::select! {
                    next = inbound.next() => match next {
                        Some(Ok(request)) => request,
                        _ => break,
                    },
                    _ = stopping.cancelled() => break,
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (this, tx, headers) = (this.clone(), tx.clone(), headers.clone());
                background.spawn(async move {
                    let id = request.id.clone();
                    let msg = match this.infer(request, trace, traffic, headers).await {
                        Ok((r, _)) => pb::ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(r),
                        },
                        Err(e) => pb::ModelStreamInferResponse {
                            error_message: e.client_message().into_owned(),
                            infer_response: Some(pb::ModelInferResponse {
                                id,
                                ..Default::default()
                            }),
                        },
                    };
                    let _ = tx.send(Ok(msg)).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn model_config(&self, req: Request<pb::ModelConfigRequest>) -> GrpcResult<pb::ModelConfigResponse> {
        let r = req.into_inner();
        let config = self.service.model_config(&r.name, opt(&r.version))?;
        Ok(Response::new(pb::ModelConfigResponse { config: Some(config) }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> GrpcResult<pb::ModelStatisticsResponse> {
        let r = req.into_inner();
        let model_stats = self.service.model_statistics(&r.name, opt(&r.version))?;
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> GrpcResult<pb::RepositoryIndexResponse> {
        let entries = self.service.repository_index(req.into_inner().ready)?;
        Ok(Response::new(pb::RepositoryIndexResponse {
            models: entries
                .into_iter()
                .map(|e| pb::repository_index_response::ModelIndex {
                    name: e.name,
                    version: e.version,
                    state: e.state,
                    reason: e.reason,
                })
                .collect(),
        }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> GrpcResult<pb::RepositoryModelLoadResponse> {
        use pb::model_repository_parameter::ParameterChoice as C;
        let caller = caller(&req);
        let r = req.into_inner();
        let parameters: Vec<(String, LoadParam)> = r
            .parameters
            .into_iter()
            .map(|(k, p)| match p.parameter_choice {
                Some(C::StringParam(s)) => (k, LoadParam::Str(s)),
                _ => (k, LoadParam::Other),
            })
            .collect();
        self.service.load_model(&r.model_name, &parameters, &caller).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> GrpcResult<pb::RepositoryModelUnloadResponse> {
        let caller = caller(&req);
        self.service.unload_model(&req.into_inner().model_name, &caller).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryStatusResponse> {
        Ok(Response::new(pb::SystemSharedMemoryStatusResponse::default()))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryRegisterResponse> {
        Err(crate::service::shared_memory_refused(false).into())
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryUnregisterResponse> {
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryStatusResponse> {
        Ok(Response::new(pb::CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryRegisterResponse> {
        Err(crate::service::shared_memory_refused(true).into())
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryUnregisterResponse> {
        Ok(Response::new(pb::CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(&self, req: Request<pb::TraceSettingRequest>) -> GrpcResult<pb::TraceSettingResponse> {
        crate::service::runtime_settings("trace", req.get_ref().settings.len())?;
        Ok(Response::new(pb::TraceSettingResponse::default()))
    }

    async fn log_settings(&self, req: Request<pb::LogSettingsRequest>) -> GrpcResult<pb::LogSettingsResponse> {
        crate::service::runtime_settings("log", req.get_ref().settings.len())?;
        Ok(Response::new(pb::LogSettingsResponse::default()))
    }
}

/// The caller's W3C `traceparent` metadata, if well-formed.
fn trace_of<T>(req: &Request<T>) -> Option<TraceContext> {
    req.metadata()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
}

/// Who is calling an admin RPC: peer address and `authorization` metadata.
/// The gRPC port is never the admin listener.
fn caller<T>(req: &Request<T>) -> Caller {
    Caller {
        peer: req.remote_addr().map(|a| a.to_string()),
        authorization: req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        admin_listener: false,
        api_token: req.extensions().get::<GrantedToken>().map(|t| t.0.clone()),
    }
}
