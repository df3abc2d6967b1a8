//! The gRPC client: `inference.GRPCInferenceService` through the generated
//! tonic client; conversions between [`Tensor`]s and the proto messages are in
//! [`convert`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

mod convert;

pub(crate) use convert::raw_request;
use convert::*;

use crate::options::resolve_scheme;
use crate::proto;
use crate::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::{ClientError, ClientOptions, InferOptions, InferResult, Tensor, TimeoutPhase};

/// Largest message sent or received (the default of 4 MiB is too small for
/// batched tensors).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Metadata added to every call (see [`GrpcClient::with_header`]); `Debug`
/// shows the keys only (values may be secrets).
#[derive(Clone, Default)]
struct ExtraMetadata(std::sync::Arc<Vec<(AsciiMetadataKey, AsciiMetadataValue)>>);

impl std::fmt::Debug for ExtraMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

impl Interceptor for ExtraMetadata {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (key, value) in self.0.iter() {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        Ok(request)
    }
}

type Inner = GrpcInferenceServiceClient<InterceptedService<Channel, ExtraMetadata>>;

fn inner_client(channel: Channel, extra: ExtraMetadata) -> Inner {
    GrpcInferenceServiceClient::with_interceptor(channel, extra)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A client of one server's gRPC endpoint. Cheap to clone: clones share one
/// HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct GrpcClient {
    inner: Inner,
    channel: Channel,
    extra: ExtraMetadata,
    /// Sent as `authorization: Bearer` metadata on admin calls.
    token: Option<String>,
    /// The limit of each call.
    request_timeout: Option<Duration>,
}

impl GrpcClient {
    /// Connects to `url` (`"http://127.0.0.1:8001"`, or without scheme
    /// `"127.0.0.1:8001"`) with the default [`ClientOptions`]; messages of up
    /// to 64 MiB pass either way.
    pub async fn connect(url: &str) -> Result<GrpcClient, ClientError> {
        GrpcClient::connect_with_options(url, &ClientOptions::default()).await
    }

    /// Connects to `url` with `options`: TLS for an `https://` URL (or one
    /// without a scheme when TLS options are set; see
    /// [`TlsOptions`](crate::TlsOptions)). `connect_timeout` bounds this
    /// first connection (TCP, TLS, HTTP/2 handshake) and the TCP connect and
    /// TLS handshake of each later reconnection; `request_timeout` bounds
    /// every call.
    pub async fn connect_with_options(url: &str, options: &ClientOptions) -> Result<GrpcClient, ClientError> {
        let (with_scheme, use_tls) = resolve_scheme(url, &options.tls)?;
        let mut endpoint = Endpoint::from_shared(with_scheme)
            .map_err(|e| ClientError::Transport(format!("invalid URL '{url}': {e}")))?;
        if let Some(t) = options.connect_timeout {
            endpoint = endpoint.connect_timeout(t);
        }
        if use_tls {
            let config = crate::tls::tonic_config(&options.tls, options.connect_timeout)?;
            endpoint = endpoint.tls_config(config).map_err(|e| ClientError::transport(&e))?;
        }
        let timed_out = |after| ClientError::Timeout {
            phase: TimeoutPhase::Connect,
            after,
        };
        let started = Instant::now();
        let connect = endpoint.connect();
        let channel = match options.connect_timeout {
            Some(t) => match tokio::time::timeout(t, connect).await {
                Ok(Ok(channel)) => channel,
                // Also the TLS handshake's own timeout, the same one, which
                // may expire in the same instant.
                Ok(Err(_)) if started.elapsed() >= t => return Err(timed_out(t)),
                Ok(Err(e)) => return Err(ClientError::transport(&e)),
                Err(_) => return Err(timed_out(t)),
            },
            None => connect.await.map_err(|e| ClientError::transport(&e))?,
        };
        let extra = ExtraMetadata::default();
        Ok(GrpcClient {
            inner: inner_client(channel.clone(), extra.clone()),
            channel,
            extra,
            token: None,
            request_timeout: options.request_timeout,
        })
    }

    /// The same client, sending `authorization: Bearer <token>` metadata on
    /// load and unload (the server's admin token).
    pub fn with_admin_token(mut self, token: &str) -> GrpcClient {
        self.token = Some(token.to_string());
        self
    }

    /// The same client, sending metadata `name: value` on every call (e.g.
    /// Triton's `triton-grpc-protocol-<key>` of a restricted protocol).
    pub fn with_header(mut self, name: &str, value: &str) -> Result<GrpcClient, ClientError> {
        let key: AsciiMetadataKey = name
            .parse()
            .map_err(|_| ClientError::InvalidArgument(format!("'{name}' is not a valid metadata key")))?;
        let value: AsciiMetadataValue = value
            .parse()
            .map_err(|_| ClientError::InvalidArgument(format!("the value of '{name}' is not valid metadata")))?;
        let mut headers = self.extra.0.as_ref().clone();
        headers.retain(|(k, _)| *k != key);
        headers.push((key, value));
        self.extra = ExtraMetadata(std::sync::Arc::new(headers));
        self.inner = inner_client(self.channel.clone(), self.extra.clone());
        Ok(self)
    }

    /// A request carrying the admin token, if any.
    fn admin_request<T>(&self, message: T) -> Result<tonic::Request<T>, ClientError> {
        let mut request = tonic::Request::new(message);
        if let Some(t) = &self.token {
            let value = format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::InvalidArgument("the admin token is not valid metadata".into()))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    /// Runs one call (`call` gets a handle of its own: tonic's calls take
    /// `&mut self`) within the request timeout, and unwraps its response. A
    /// call that times out is dropped, which resets its HTTP/2 stream.
    async fn call<T, F>(&self, call: impl FnOnce(Inner) -> F) -> Result<T, ClientError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let response = call(self.inner.clone());
        let response = match self.request_timeout {
            Some(t) => tokio::time::timeout(t, response)
                .await
                .map_err(|_| ClientError::Timeout {
                    phase: TimeoutPhase::Request,
                    after: t,
                })?,
            None => response.await,
        };
        Ok(response?.into_inner())
    }

    /// `ServerLive`.
    pub async fn live(&self) -> Result<bool, ClientError> {
        let response = self
            .call(|mut c| async move { c.server_live(proto::ServerLiveRequest {}).await })
            .await?;
        Ok(response.live)
    }

    /// `ServerReady`.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        let response = self
            .call(|mut c| async move { c.server_ready(proto::ServerReadyRequest {}).await })
            .await?;
        Ok(response.ready)
    }

    /// `ModelReady`; `None` lets the server choose the version.
    pub async fn model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, ClientError> {
        let request = proto::ModelReadyRequest {
            name: model.to_string(),
            version: version.unwrap_or_default().to_string(),
        };
        let response = self.call(|mut c| async move { c.model_ready(request).await }).await?;
        Ok(response.ready)
    }

    /// `ServerMetadata`.
    pub async fn server_metadata(&self) -> Result<proto::ServerMetadataResponse, ClientError> {
        self.call(|mut c| async move { c.server_metadata(proto::ServerMetadataRequest {}).await })
            .await
    }

    /// `ModelMetadata`.
    pub async fn model_metadata(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<proto::ModelMetadataResponse, ClientError> {
        let request = proto::ModelMetadataRequest {
            name: model.to_string(),
            version: version.unwrap_or_default().to_string(),
        };
        self.call(|mut c| async move { c.model_metadata(request).await }).await
    }

    /// `ModelConfig`: the model's effective configuration.
    pub async fn model_config(&self, model: &str, version: Option<&str>) -> Result<proto::ModelConfig, ClientError> {
        let request = proto::ModelConfigRequest {
            name: model.to_string(),
            version: version.unwrap_or_default().to_string(),
        };
        self.call(|mut c| async move { c.model_config(request).await })
            .await?
            .config
            .ok_or_else(|| ClientError::Decode("ModelConfig response without a config".into()))
    }

    /// `ModelStatistics`; `None` for every model (or every version).
    pub async fn statistics(
        &self,
        model: Option<&str>,
        version: Option<&str>,
    ) -> Result<proto::ModelStatisticsResponse, ClientError> {
        let request = proto::ModelStatisticsRequest {
            name: model.unwrap_or_default().to_string(),
            version: version.unwrap_or_default().to_string(),
        };
        self.call(|mut c| async move { c.model_statistics(request).await })
            .await
    }

    /// `RepositoryIndex` (only the ready models with `ready_only`).
    pub async fn repository_index(&self, ready_only: bool) -> Result<proto::RepositoryIndexResponse, ClientError> {
        let request = proto::RepositoryIndexRequest {
            repository_name: String::new(),
            ready: ready_only,
        };
        self.call(|mut c| async move { c.repository_index(request).await })
            .await
    }

    /// `RepositoryModelLoad`, with an optional JSON model configuration that
    /// overrides the repository's (parameter `config`).
    pub async fn load_model(&self, model: &str, config_json: Option<&str>) -> Result<(), ClientError> {
        use proto::model_repository_parameter::ParameterChoice as P;
        let parameters = config_json
            .map(|c| {
                let p = proto::ModelRepositoryParameter {
                    parameter_choice: Some(P::StringParam(c.to_string())),
                };
                ("config".to_string(), p)
            })
            .into_iter()
            .collect();
        let request = proto::RepositoryModelLoadRequest {
            repository_name: String::new(),
            model_name: model.to_string(),
            parameters,
        };
        let request = self.admin_request(request)?;
        self.call(|mut c| async move { c.repository_model_load(request).await })
            .await
            .map(drop)
    }

    /// `RepositoryModelUnload`.
    pub async fn unload_model(&self, model: &str) -> Result<(), ClientError> {
        let request = proto::RepositoryModelUnloadRequest {
            repository_name: String::new(),
            model_name: model.to_string(),
            parameters: HashMap::new(),
        };
        let request = self.admin_request(request)?;
        self.call(|mut c| async move { c.repository_model_unload(request).await })
            .await
            .map(drop)
    }

    /// `ModelInfer` with inputs in `raw_input_contents`. Outputs are read from
    /// `raw_output_contents`, or from typed `contents` if the server sent those.
    pub async fn infer(&self, model: &str, inputs: &[Tensor], opts: &InferOptions) -> Result<InferResult, ClientError> {
        decode_response(self.infer_raw(raw_request(model, inputs, opts)?).await?)
    }

    /// `ModelInfer` with inputs as typed `InferTensorContents`. FP16/BF16 have
    /// no typed form: such inputs are an error.
    pub async fn infer_typed(
        &self,
        model: &str,
        inputs: &[Tensor],
        opts: &InferOptions,
    ) -> Result<InferResult, ClientError> {
        let mut request = request_header(model, inputs, opts)?;
        for (input, t) in request.inputs.iter_mut().zip(inputs) {
            input.contents = Some(typed_contents(t)?);
        }
        decode_response(self.infer_raw(request).await?)
    }

    /// Sends `request` unchanged (for tests of malformed requests).
    pub async fn infer_raw(&self, request: proto::ModelInferRequest) -> Result<proto::ModelInferResponse, ClientError> {
        self.call(|mut c| async move { c.model_infer(request).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Data;
    use crate::proto::infer_parameter::ParameterChoice;
    use proto::model_infer_response::InferOutputTensor;
    use serde_json::json;

    fn output(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<proto::InferTensorContents>,
    ) -> InferOutputTensor {
        InferOutputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: HashMap::new(),
            contents,
        }
    }

    #[test]
    fn typed_contents_round_trip_through_a_response() {
        let tensors = [
            Tensor::new("b", vec![2], Data::Bool(vec![true, false])),
            Tensor::new("u8", vec![2], Data::U8(vec![0, 255])),
            Tensor::new("u16", vec![1], Data::U16(vec![65535])),
            Tensor::new("u32", vec![1], Data::U32(vec![u32::MAX])),
            Tensor::new("u64", vec![1], Data::U64(vec![u64::MAX])),
            Tensor::new("i8", vec![2], Data::I8(vec![-128, 127])),
            Tensor::new("i16", vec![1], Data::I16(vec![-32768])),
            Tensor::new("i32", vec![1], Data::I32(vec![i32::MIN])),
            Tensor::new("i64", vec![1], Data::I64(vec![i64::MIN])),
            Tensor::new("f32", vec![1], Data::F32(vec![0.25])),
            Tensor::new("f64", vec![1], Data::F64(vec![-0.5])),
            Tensor::new("s", vec![2], Data::Bytes(vec![vec![0xff], vec![]])),
        ];
        let resp = proto::ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            outputs: tensors
                .iter()
                .map(|t| output(&t.name, t.datatype(), t.shape.clone(), Some(typed_contents(t).unwrap())))
                .collect(),
            ..Default::default()
        };
        let result = decode_response(resp).unwrap();
        assert_eq!(result.outputs, tensors);
        let half = Tensor::new("h", vec![1], Data::F16(vec![0]));
        assert!(typed_contents(&half).unwrap_err().to_string().contains("send them raw"));
    }

    #[test]
    fn raw_outputs_are_preferred_and_checked() {
        let t = Tensor::new("y", vec![2], Data::F16(vec![0x3c00, 0]));
        let resp = proto::ModelInferResponse {
            outputs: vec![output("y", "FP16", vec![2], None)],
            raw_output_contents: vec![t.to_raw().unwrap().into()],
            ..Default::default()
        };
        assert_eq!(decode_response(resp).unwrap().outputs, [t]);
        let mismatch = proto::ModelInferResponse {
            outputs: vec![output("a", "INT32", vec![0], None), output("b", "INT32", vec![0], None)],
            raw_output_contents: vec![Vec::new().into()],
            ..Default::default()
        };
        assert!(decode_response(mismatch).is_err());
        let wide = proto::InferTensorContents {
            int_contents: vec![300],
            ..Default::default()
        };
        let out_of_range = proto::ModelInferResponse {
            outputs: vec![output("a", "INT8", vec![1], Some(wide))],
            ..Default::default()
        };
        assert!(
            decode_response(out_of_range)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        let empty = proto::ModelInferResponse {
            outputs: vec![output("a", "FP32", vec![0, 3], None)],
            ..Default::default()
        };
        assert_eq!(decode_response(empty).unwrap().outputs[0].data, Data::F32(vec![]));
    }

    #[test]
    fn request_parameters_convert_to_infer_parameters() {
        let params = json!({"b": true, "i": -3, "u": u64::MAX, "d": 0.5, "s": "x"});
        let converted = convert_parameters(params.as_object().unwrap()).unwrap();
        let get = |k: &str| converted[k].parameter_choice.clone().unwrap();
        assert_eq!(get("b"), ParameterChoice::BoolParam(true));
        assert_eq!(get("i"), ParameterChoice::Int64Param(-3));
        assert_eq!(get("u"), ParameterChoice::Uint64Param(u64::MAX));
        assert_eq!(get("d"), ParameterChoice::DoubleParam(0.5));
        assert_eq!(get("s"), ParameterChoice::StringParam("x".into()));
        let bad = json!({"a": [1]});
        assert!(convert_parameters(bad.as_object().unwrap()).is_err());
    }

    #[test]
    fn request_header_carries_options() {
        let opts = InferOptions {
            model_version: Some("2".into()),
            id: Some("r".into()),
            outputs: vec!["OUT".into()],
            ..Default::default()
        };
        let inputs = [Tensor::new("IN", vec![1, 2], Data::I32(vec![1, 2]))];
        let r = request_header("m", &inputs, &opts).unwrap();
        assert_eq!(
            (r.model_name.as_str(), r.model_version.as_str(), r.id.as_str()),
            ("m", "2", "r")
        );
        assert_eq!(r.inputs[0].datatype, "INT32");
        assert_eq!(r.inputs[0].shape, [1, 2]);
        assert_eq!(r.outputs[0].name, "OUT");
    }
}
