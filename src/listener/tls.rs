//! TLS termination: certificates chosen by SNI, offered protocols by ALPN (h2, http/1.1).
//!
//! Certificates are loaded when the config compiles, so `check` reports unreadable or
//! mismatched files, and a reload re-reads them (renewed certificates need no restart).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, DnsName, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::upstream::tls::{load_certs, load_key, provider};

/// One certificate with its key and the names it answers for.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Lower-case names from the config; empty = use the certificate's own names.
    hosts: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl CertSpec {
    /// Errors name the config field at fault (`cert` or `key`).
    pub fn load(cert: &Path, key: &Path, hosts: &[String]) -> Result<CertSpec, (&'static str, String)> {
        let chain = load_certs(cert).map_err(|e| ("cert", e))?;
        let der = load_key(key).map_err(|e| ("key", e))?;
        let signing = provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| ("key", format!("unusable private key in {}: {e}", key.display())))?;
        let certified = CertifiedKey::new(chain, signing);
        if let Err(e) = certified.keys_match() {
            return Err(("key", format!("{} does not belong to {}: {e}", key.display(), cert.display())));
        }
        Ok(CertSpec { hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(), key: Arc::new(certified) })
    }

    fn matches(&self, name: &str) -> bool {
        if self.hosts.is_empty() {
            return self.key.cert.first().is_some_and(|c| cert_valid_for(c, name));
        }
        self.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(suffix) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            None => h == name,
        })
    }
}

fn cert_valid_for(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(dns) = DnsName::try_from(name.to_owned()) else { return false };
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else { return false };
    ee.verify_is_valid_for_subject_name(&ServerName::DnsName(dns)).is_ok()
}

/// Picks the certificate for the SNI name; the first certificate is the default.
#[derive(Debug)]
struct SniResolver {
    certs: Arc<Vec<CertSpec>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(c) = self.certs.iter().find(|c| c.matches(&name)) {
                return Some(c.key.clone());
            }
        }
        self.certs.first().map(|c| c.key.clone())
    }
}

pub fn server_config(certs: Arc<Vec<CertSpec>>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
