//! [`TlsOptions`] turned into each transport's TLS configuration: a rustls
//! `ClientConfig` for reqwest, a tonic `ClientTlsConfig` for gRPC. Both
//! parse the PEM data here first, so bad input fails when the client is
//! built, with the same messages for both protocols.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{ClientError, TlsOptions};

fn invalid(message: String) -> ClientError {
    ClientError::InvalidArgument(message)
}

/// The certificates of a PEM document; at least one.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{what}: not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("{what}: no certificate in the PEM data")));
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, ClientError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| invalid(format!("client key: no usable private key: {e}")))
}

fn server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(name.to_string())
        .map_err(|e| invalid(format!("TLS server name '{name}' is not a DNS name or IP address: {e}")))
}

/// The trust roots: the CA option's certificates, or the system's.
fn roots(tls: &TlsOptions) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for cert in certificates(pem, "CA certificates")? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("CA certificates: unusable certificate: {e}")))?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(invalid(
                    "no trusted CA certificates: the system has none; give a CA file".into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// Checks the server's certificate against a fixed name instead of the one
/// the connection was made to.
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls configuration of the HTTP client (HTTP/1.1 over TLS 1.2 or 1.3,
/// *ring* provider).
pub(crate) fn rustls_config(tls: &TlsOptions) -> Result<rustls::ClientConfig, ClientError> {
    tls.check()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(tls)?), provider.clone())
        .build()
        .map_err(|e| invalid(format!("CA certificates: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?;
    let builder = match &tls.server_name {
        Some(name) => builder.dangerous().with_custom_certificate_verifier(Arc::new(VerifyAs {
            inner: verifier,
            name: server_name(name)?,
        })),
        None => builder.with_webpki_verifier(verifier),
    };
    let mut config = match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert, "client certificate")?, private_key(key)?)
            .map_err(|e| invalid(format!("client certificate and key: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The tonic TLS configuration of the gRPC client; the handshake is bounded
/// by `handshake_timeout`. (tonic uses the process's default rustls provider
/// when one is installed, else *ring*.)
pub(crate) fn tonic_config(
    tls: &TlsOptions,
    handshake_timeout: Option<Duration>,
) -> Result<tonic::transport::ClientTlsConfig, ClientError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    tls.check()?;
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_pem {
        Some(pem) => {
            roots(tls)?;
            config.ca_certificate(Certificate::from_pem(pem))
        }
        None => config.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&tls.client_cert_pem, &tls.client_key_pem) {
        certificates(cert, "client certificate")?;
        private_key(key)?;
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(name) = &tls.server_name {
        server_name(name)?;
        config = config.domain_name(name);
    }
    if let Some(t) = handshake_timeout {
        config = config.timeout(t);
    }
    Ok(config)
}
