//! Connection options shared by both transports: timeouts and TLS.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::ClientError;

/// Default [`ClientOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ClientOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How a client connects: timeouts and TLS. `ClientOptions::default()` is
/// what [`HttpClient::new`](crate::HttpClient::new) and
/// [`GrpcClient::connect`](crate::GrpcClient::connect) use: a 10 s connect
/// timeout, a 60 s request timeout and no TLS options.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The longest a connection may take to establish (TCP and TLS); `None`
    /// waits for as long as the operating system does. A call that times out
    /// here fails with [`ClientError::Timeout`].
    pub connect_timeout: Option<Duration>,
    /// The longest one call may take, from sending the request to the end of
    /// the response (connecting included); `None` waits forever. A call that
    /// times out fails with [`ClientError::Timeout`] (over gRPC the stream is
    /// reset, which cancels the call on the server).
    pub request_timeout: Option<Duration>,
    /// TLS settings; see [`TlsOptions`] for when TLS is used.
    pub tls: TlsOptions,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            tls: TlsOptions::default(),
        }
    }
}

impl ClientOptions {
    /// The same options with `connect_timeout` (`None`: no limit).
    pub fn with_connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> ClientOptions {
        self.connect_timeout = timeout.into();
        self
    }

    /// The same options with `request_timeout` (`None`: no limit).
    pub fn with_request_timeout(mut self, timeout: impl Into<Option<Duration>>) -> ClientOptions {
        self.request_timeout = timeout.into();
        self
    }

    /// The same options with `tls`.
    pub fn with_tls(mut self, tls: TlsOptions) -> ClientOptions {
        self.tls = tls;
        self
    }
}

/// TLS settings of a client (rustls with the *ring* provider, for both
/// protocols).
///
/// TLS is used when the URL starts with `https://`, or when it has no scheme
/// and any of these options is set; a URL with `http://` and any option set
/// is an error rather than a silent plaintext connection. Without a CA, the
/// server's certificate is checked against the operating system's trusted
/// roots.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM certificates (one or more) of the CAs to trust for the server's
    /// certificate, instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain the client presents (mutual TLS); needs
    /// `client_key_pem`.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert_pem`.
    pub client_key_pem: Option<Vec<u8>>,
    /// The name the server's certificate must carry, when it differs from the
    /// URL's host (e.g. a URL with an IP address). gRPC also sends it as the
    /// TLS server name (SNI); HTTP sends the URL's host, as usual, and only
    /// checks the certificate against this name.
    pub server_name: Option<String>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = |v: &Option<Vec<u8>>| v.as_ref().map(Vec::len);
        f.debug_struct("TlsOptions")
            .field("ca_pem_bytes", &len(&self.ca_pem))
            .field("client_cert_pem_bytes", &len(&self.client_cert_pem))
            .field("client_key_pem", &self.client_key_pem.as_ref().map(|_| "<redacted>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsOptions {
    /// Options from PEM files (any may be `None`): the CA bundle, and the
    /// client certificate and key for mutual TLS (both or neither).
    pub fn from_files(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<TlsOptions, ClientError> {
        let read = |what: &str, path: Option<&Path>| {
            path.map(|p| {
                std::fs::read(p)
                    .map_err(|e| ClientError::InvalidArgument(format!("reading {what} {}: {e}", p.display())))
            })
            .transpose()
        };
        let tls = TlsOptions {
            ca_pem: read("CA file", ca_file)?,
            client_cert_pem: read("client certificate", cert_file)?,
            client_key_pem: read("client key", key_file)?,
            server_name: None,
        };
        tls.check()?;
        Ok(tls)
    }

    /// The same options trusting the CAs of `pem` instead of the system's roots.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> TlsOptions {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The same options presenting a client certificate (mutual TLS).
    pub fn with_client_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> TlsOptions {
        self.client_cert_pem = Some(cert.into());
        self.client_key_pem = Some(key.into());
        self
    }

    /// The same options expecting `name` in the server's certificate.
    pub fn with_server_name(mut self, name: impl Into<String>) -> TlsOptions {
        self.server_name = Some(name.into());
        self
    }

    /// True when any option is set (which, for a URL without a scheme, turns
    /// TLS on).
    pub fn is_set(&self) -> bool {
        self.ca_pem.is_some()
            || self.client_cert_pem.is_some()
            || self.client_key_pem.is_some()
            || self.server_name.is_some()
    }

    /// Checks what can be checked without connecting.
    pub(crate) fn check(&self) -> Result<(), ClientError> {
        if self.client_cert_pem.is_some() != self.client_key_pem.is_some() {
            return Err(ClientError::InvalidArgument(
                "a client certificate needs its key, and a key its certificate".into(),
            ));
        }
        Ok(())
    }
}

/// `url` with a scheme, following the rule of [`TlsOptions`]; `Ok(true)` in
/// the second place when TLS is to be used.
pub(crate) fn resolve_scheme(url: &str, tls: &TlsOptions) -> Result<(String, bool), ClientError> {
    tls.check()?;
    match url.split_once("://") {
        None if tls.is_set() => Ok((format!("https://{url}"), true)),
        None => Ok((format!("http://{url}"), false)),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => Ok((url.to_string(), true)),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") && tls.is_set() => Err(ClientError::InvalidArgument(
            format!("'{url}' is an http:// URL but TLS options are set: use https:// (or no scheme)"),
        )),
        Some(_) => Ok((url.to_string(), false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_follows_the_tls_options() {
        let none = TlsOptions::default();
        let ca = TlsOptions::default().with_ca_pem("x");
        let r = |url: &str, tls: &TlsOptions| resolve_scheme(url, tls).map_err(|e| e.to_string());
        assert_eq!(r("h:1", &none), Ok(("http://h:1".into(), false)));
        assert_eq!(r("h:1", &ca), Ok(("https://h:1".into(), true)));
        assert_eq!(r("https://h:1", &none), Ok(("https://h:1".into(), true)));
        assert_eq!(r("HTTPS://h:1", &ca), Ok(("HTTPS://h:1".into(), true)));
        assert_eq!(r("http://h:1", &none), Ok(("http://h:1".into(), false)));
        assert!(r("http://h:1", &ca).unwrap_err().contains("use https://"));
        let named = TlsOptions::default().with_server_name("n");
        assert_eq!(r("h:1", &named), Ok(("https://h:1".into(), true)));
        // Other schemes pass through, for the transports to reject.
        assert_eq!(r("ftp://h", &none), Ok(("ftp://h".into(), false)));
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let half = TlsOptions {
            client_cert_pem: Some(b"cert".to_vec()),
            ..Default::default()
        };
        assert!(matches!(half.check(), Err(ClientError::InvalidArgument(_))));
        assert!(resolve_scheme("h:1", &half).is_err());
        let both = half.with_client_identity_pem("cert", "key");
        assert!(both.check().is_ok());
        let debug = format!("{both:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains(&format!("{:?}", b"key")), "{debug}");
    }

    #[test]
    fn files_are_read_and_missing_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"PEM").unwrap();
        let tls = TlsOptions::from_files(Some(&ca), None, None).unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some(&b"PEM"[..]));
        let missing = dir.path().join("missing.pem");
        let e = TlsOptions::from_files(None, Some(&missing), Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert!(TlsOptions::from_files(None, Some(&ca), None).is_err());
    }
}
