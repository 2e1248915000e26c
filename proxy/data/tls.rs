//! TLS with rustls (ring provider): the listener side (certificates chosen by SNI, reloaded from
//! disk when they change, ALPN `h2` and `http/1.1`) and the client configurations used to reach
//! upstreams over TLS.
//!
//! A certificate that changes on disk is re-read by a poller once a second; new handshakes get
//! it, open connections keep theirs. A file that does not load is logged and the previous
//! certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::config::{CertificateFiles, HostPattern, ListenerTls, UpstreamTls};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read or parsed.
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(file: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads a PEM certificate chain and its private key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no PEM certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let signing = default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| file_error(key, e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| file_error(key, format!("does not match {}: {e}", cert.display())))?;
    Ok(Arc::new(certified))
}

struct Loaded {
    names: Vec<HostPattern>,
    files: CertificateFiles,
    stamp: Option<(SystemTime, SystemTime)>,
    key: Arc<CertifiedKey>,
}

fn stamps(files: &CertificateFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

/// A listener's certificates, chosen by SNI, swappable while serving.
pub struct CertStore {
    loaded: ArcSwap<Vec<Arc<Loaded>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    /// Loads every certificate of a listener; fails on the first file that does not load.
    pub fn load(tls: &ListenerTls) -> Result<Arc<CertStore>, TlsError> {
        let mut loaded = Vec::with_capacity(tls.certificates.len());
        for files in &tls.certificates {
            loaded.push(Arc::new(Loaded {
                names: files.server_names.clone(),
                files: files.clone(),
                stamp: stamps(files),
                key: load_certified_key(&files.cert, &files.key)?,
            }));
        }
        Ok(Arc::new(CertStore {
            loaded: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Re-reads certificates whose files changed; a file that fails keeps the old certificate.
    pub fn reload_changed(&self) {
        let current = self.loaded.load_full();
        let mut changed = false;
        let next: Vec<Arc<Loaded>> = current
            .iter()
            .map(|l| {
                let stamp = stamps(&l.files);
                if stamp == l.stamp {
                    return l.clone();
                }
                match load_certified_key(&l.files.cert, &l.files.key) {
                    Ok(key) => {
                        changed = true;
                        tracing::info!(cert = %l.files.cert.display(), "certificate reloaded");
                        Arc::new(Loaded {
                            names: l.names.clone(),
                            files: l.files.clone(),
                            stamp,
                            key,
                        })
                    }
                    Err(error) => {
                        tracing::error!(%error, "certificate reload failed; the previous certificate stays in service");
                        // Remember the stamp so a broken file is reported once, not every second.
                        changed = true;
                        Arc::new(Loaded {
                            names: l.names.clone(),
                            files: l.files.clone(),
                            stamp,
                            key: l.key.clone(),
                        })
                    }
                }
            })
            .collect();
        if changed {
            self.loaded.store(Arc::new(next));
        }
    }

    /// Polls the files once a second until `shutdown` fires.
    pub fn spawn_reloader(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = ticker.tick() => store.reload_changed(),
                    _ = shutdown.changed() => break,
                }
            }
        });
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.load();
        if let Some(name) = hello.server_name() {
            let patterns_match = |l: &&Arc<Loaded>| crate::route::host_matches(&l.names, name);
            if let Some(l) = loaded.iter().find(patterns_match) {
                return Some(l.key.clone());
            }
        }
        loaded
            .iter()
            .find(|l| l.names.is_empty())
            .or_else(|| loaded.first())
            .map(|l| l.key.clone())
    }
}

/// The rustls server configuration of a listener: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls client configuration for an upstream: the CA bundle given, else the webpki roots.
pub fn client_config(tls: Option<&UpstreamTls>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .map_err(|e| file_error(ca, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error(ca, e))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(file_error(ca, "no usable CA certificate in the file"));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client configuration that trusts no root: every handshake fails verification.
pub fn client_config_trusting_nothing() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        // The ring provider supports the safe default versions: this cannot fail.
        .expect("ring supports TLS 1.2 and 1.3")
}

/// Loads every TLS file a configuration names, so `check` and reloads catch a bad file before
/// anything is served with it.
pub fn check_files(config: &crate::config::Config) -> Result<(), TlsError> {
    for l in &config.listeners {
        if let Some(tls) = &l.tls {
            CertStore::load(tls)?;
        }
    }
    for r in &config.routes {
        for v in &r.versions {
            if let Some(tls) = &v.tls {
                client_config(Some(tls))?;
            }
        }
    }
    Ok(())
}
