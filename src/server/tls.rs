//! TLS for both ports from one [`SslSettings`]: tonic's configuration for gRPC and a rustls
//! configuration for REST (served through axum-server). Mutual TLS when `client_verify` is
//! set; otherwise a client certificate, if offered, is verified against `custom_ca` when
//! one is given. Building only; the listeners live in `server`.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::config::ssl::SslSettings;

/// The gRPC port's TLS.
pub fn grpc(settings: &SslSettings) -> tonic::transport::ServerTlsConfig {
    let identity = tonic::transport::Identity::from_pem(&settings.cert_pem, &settings.key_pem);
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &settings.client_ca_pem {
        config = config
            .client_ca_root(tonic::transport::Certificate::from_pem(ca))
            .client_auth_optional(!settings.client_verify);
    }
    config
}

/// The REST port's TLS (HTTP/1.1 and HTTP/2 by ALPN).
pub fn rest(settings: &SslSettings) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(settings.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("--ssl_config_file: server_cert")?;
    let key = PrivateKeyDer::from_pem_slice(settings.key_pem.as_bytes())
        .context("--ssl_config_file: server_key")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &settings.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots
                    .add(cert.context("--ssl_config_file: custom_ca")?)
                    .context("--ssl_config_file: custom_ca")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.client_verify {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .context("--ssl_config_file: custom_ca")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("--ssl_config_file: server_cert does not match server_key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
