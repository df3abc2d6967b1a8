//! TLS for the listeners, with rustls (ring provider; TLS 1.2 and 1.3 only):
//! a server certificate and key from PEM files, optionally client
//! certificates verified against a CA bundle (mTLS), ALPN per listener.
//!
//! Certificates are reloaded when their files change (cert-manager and
//! Kubernetes secrets rotate them in place): a watcher re-reads the files
//! every [`RELOAD_INTERVAL`] and, when their bytes differ, builds a new
//! configuration and swaps it in. New handshakes use it; connections already
//! open keep theirs. A new configuration that does not build (a key that does
//! not match, a truncated file) is refused with a logged error and the
//! previous one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Where a listener's certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; required with `mutual`.
    pub client_ca: Option<PathBuf>,
    /// Require and verify client certificates.
    pub mutual: bool,
}

/// A listener's TLS acceptor; cheap to clone, always the current configuration.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ArcSwap<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Builds the configuration from `files` (an error names the file) and,
    /// until `stop`, reloads it when the files change.
    pub fn start(files: TlsFiles, alpn: &[&[u8]], stop: CancellationToken) -> anyhow::Result<Tls> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let (bytes, config) = build(&files, &alpn)?;
        let tls = Tls {
            config: Arc::new(ArcSwap::from_pointee(config)),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(watch(files, alpn, bytes, tls.config.clone(), stop));
        }
        Ok(tls)
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }
}

/// The files' bytes, to notice changes.
type Snapshot = Vec<Vec<u8>>;

fn read_all(files: &TlsFiles) -> anyhow::Result<Snapshot> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()));
    let mut out = vec![read(&files.cert)?, read(&files.key)?];
    if let Some(ca) = &files.client_ca {
        out.push(read(ca)?);
    }
    Ok(out)
}

fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> anyhow::Result<(Snapshot, ServerConfig)> {
    let bytes = read_all(files)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes[0])
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate chain: {e}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in the file",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_slice(&bytes[1])
        .map_err(|e| anyhow::anyhow!("{}: not a PEM private key: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow::anyhow!("TLS versions: {e}"))?;
    let builder = match (&files.client_ca, files.mutual) {
        (Some(ca), true) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&bytes[2]) {
                let cert = cert.map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("{}: unusable CA certificate: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, true) => anyhow::bail!("mutual TLS needs a root certificate (the CA bundle of the clients)"),
        (_, false) => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        anyhow::anyhow!(
            "{} / {}: the certificate and key do not make a usable pair: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok((bytes, config))
}

/// An HTTP client builder for the outgoing sinks (prediction log, OTLP):
/// `https://` trusts the system roots plus `extra_ca` (PEM), when given.
pub fn sink_client(extra_ca: Option<&[u8]>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder().no_proxy().https_only(false);
    if let Some(pem) = extra_ca {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| anyhow::anyhow!("sink CA bundle: {e}"))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

async fn watch(
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    mut current: Snapshot,
    config: Arc<ArcSwap<ServerConfig>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
        }
        let files2 = files.clone();
        let Ok(Ok(now)) = tokio::task::spawn_blocking(move || read_all(&files2)).await else {
            // Mid-rotation a file can be missing for a moment: try again next time.
            continue;
        };
        if now == current {
            continue;
        }
        match build(&files, &alpn) {
            Ok((bytes, new)) => {
                config.store(Arc::new(new));
                current = bytes;
                metrics::counter!(crate::metrics::TLS_RELOADS, "outcome" => "ok").increment(1);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                // Refused once per change: the previous certificate keeps serving.
                current = now;
                metrics::counter!(crate::metrics::TLS_RELOADS, "outcome" => "refused").increment(1);
                tracing::error!(error = %e, "new TLS certificate refused; the previous one keeps serving");
            }
        }
    }
}
