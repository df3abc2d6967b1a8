//! The tower layer in front of the gRPC service: access checks by method
//! path, and the call's `:authority` kept for the traffic decision.

use tonic::Status;

use crate::access::{GrantedToken, grpc_group};
use crate::metrics::Protocol;
use crate::service::Service;

/// The `:authority` of a call (tonic keeps headers, not the URI).
#[derive(Debug, Clone)]
pub(super) struct Authority(pub(super) String);

/// The access check of every gRPC call (`--grpc-restricted-protocol`,
/// `--api-token-file`), `grpc.health.v1` included, by method path, before
/// the request's messages are read. A refusal is a trailers-only response.
/// It also keeps each call's `:authority` for the traffic decision.
#[derive(Debug, Clone)]
pub struct AccessLayer {
    service: Service,
}

impl AccessLayer {
    /// The checks of `service`'s policy.
    pub fn new(service: &Service) -> AccessLayer {
        AccessLayer {
            service: service.clone(),
        }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> AccessService<S> {
        AccessService {
            inner,
            service: self.service.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Debug, Clone)]
pub struct AccessService<S> {
    inner: S,
    service: Service,
}

impl<S, B, RB> tower::Service<http::Request<B>> for AccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, std::future::Ready<std::result::Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()))
            .map(str::to_string);
        if let Some(a) = authority {
            req.extensions_mut().insert(Authority(a));
        }
        if let Some(group) = grpc_group(req.uri().path()) {
            let headers = req.headers();
            let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            match self.service.access().check(Protocol::Grpc, group, lookup) {
                Ok(Some(token)) => {
                    req.extensions_mut().insert(GrantedToken(token));
                }
                Ok(None) => {}
                Err(e) => return futures::future::Either::Right(std::future::ready(Ok(Status::from(e).into_http()))),
            }
        }
        futures::future::Either::Left(self.inner.call(req))
    }
}
