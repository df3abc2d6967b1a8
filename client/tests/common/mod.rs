//! Test servers on 127.0.0.1 ephemeral ports: one that accepts connections
//! and never answers, an HTTPS server (tokio-rustls, one fixed answer) and a
//! gRPC server over TLS (tonic) answering `ServerLive`; and certificates made
//! in the test with rcgen (never written anywhere but memory).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use switchyard_client::proto;
use switchyard_client::proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::{Request, Response, Status};

/// A listener that accepts every connection and never reads or writes. The
/// connections stay open until the task is aborted (dropping the handle
/// does not stop it; [`Silent`] aborts on drop).
pub struct Silent {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn silent_server() -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    Silent { addr, task }
}

/// A certificate authority of the test.
pub struct Ca {
    /// The CA certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), for a server or
    /// a client.
    pub fn leaf(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn server_leaf(&self) -> Leaf {
        self.leaf(&["127.0.0.1", "switchyard.test"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client_leaf(&self) -> Leaf {
        self.leaf(&["client.switchyard.test"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A TLS server answering every HTTP/1.1 request with `200 OK` and an empty
/// body; with `client_ca`, it requires a client certificate issued by it.
pub struct HttpsServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn https_server(server: &Leaf, client_ca: Option<&Ca>) -> HttpsServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let certs = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let config = builder.with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = tls.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    // Requests without bodies: each ends with an empty line.
                    while let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        request.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if tls.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    HttpsServer { addr, task }
}

/// The gRPC server of the tests: `ServerLive` says live, the rest is
/// unimplemented.
struct Live;

type Stream = Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::ModelStreamInferResponse, Status>> + Send>>;

// The whole impl comes out of the macro, so that `async_trait` sees every
// method.
macro_rules! live_service {
    ($($name:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl GrpcInferenceService for Live {
            type ModelStreamInferStream = Stream;

            async fn server_live(
                &self,
                _: Request<proto::ServerLiveRequest>,
            ) -> Result<Response<proto::ServerLiveResponse>, Status> {
                Ok(Response::new(proto::ServerLiveResponse { live: true }))
            }

            async fn model_stream_infer(
                &self,
                _: Request<tonic::Streaming<proto::ModelInferRequest>>,
            ) -> Result<Response<Stream>, Status> {
                Err(Status::unimplemented("model_stream_infer"))
            }

            $(
                async fn $name(&self, _: Request<proto::$req>) -> Result<Response<proto::$resp>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

live_service! {
    server_ready(ServerReadyRequest) -> ServerReadyResponse;
    model_ready(ModelReadyRequest) -> ModelReadyResponse;
    server_metadata(ServerMetadataRequest) -> ServerMetadataResponse;
    model_metadata(ModelMetadataRequest) -> ModelMetadataResponse;
    model_infer(ModelInferRequest) -> ModelInferResponse;
    model_config(ModelConfigRequest) -> ModelConfigResponse;
    model_statistics(ModelStatisticsRequest) -> ModelStatisticsResponse;
    repository_index(RepositoryIndexRequest) -> RepositoryIndexResponse;
    repository_model_load(RepositoryModelLoadRequest) -> RepositoryModelLoadResponse;
    repository_model_unload(RepositoryModelUnloadRequest) -> RepositoryModelUnloadResponse;
    system_shared_memory_status(SystemSharedMemoryStatusRequest) -> SystemSharedMemoryStatusResponse;
    system_shared_memory_register(SystemSharedMemoryRegisterRequest) -> SystemSharedMemoryRegisterResponse;
    system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest) -> SystemSharedMemoryUnregisterResponse;
    cuda_shared_memory_status(CudaSharedMemoryStatusRequest) -> CudaSharedMemoryStatusResponse;
    cuda_shared_memory_register(CudaSharedMemoryRegisterRequest) -> CudaSharedMemoryRegisterResponse;
    cuda_shared_memory_unregister(CudaSharedMemoryUnregisterRequest) -> CudaSharedMemoryUnregisterResponse;
    trace_setting(TraceSettingRequest) -> TraceSettingResponse;
    log_settings(LogSettingsRequest) -> LogSettingsResponse;
}

/// A gRPC server over TLS; with `client_ca`, it requires a client
/// certificate issued by it.
pub struct GrpcTlsServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for GrpcTlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn grpc_tls_server(server: &Leaf, client_ca: Option<&Ca>) -> GrpcTlsServer {
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(&server.cert_pem, &server.key_pem));
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(&ca.pem));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(GrpcInferenceServiceServer::new(Live));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        router.serve_with_incoming(incoming).await.unwrap();
    });
    GrpcTlsServer { addr, task }
}
