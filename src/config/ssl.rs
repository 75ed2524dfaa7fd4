//! `--ssl_config_file`: TF Serving's `SSLConfig` in protobuf text format (PEM text inline,
//! not file paths), validated into [`SslSettings`]. Parsing only; `server::tls` builds the
//! TLS configurations from it.

use std::path::Path;

use crate::config::text_format;
use crate::proto::tensorflow::serving::SslConfig;

/// TLS settings for both ports.
#[derive(Clone, PartialEq, Eq)]
pub struct SslSettings {
    /// PEM private key of the server.
    pub key_pem: String,
    /// PEM certificate chain of the server.
    pub cert_pem: String,
    /// PEM CA bundle that client certificates must chain to.
    pub client_ca_pem: Option<String>,
    /// Mutual TLS: a client without a certificate from `client_ca_pem` is refused.
    pub client_verify: bool,
}

impl std::fmt::Debug for SslSettings {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SslSettings")
            .field("client_ca", &self.client_ca_pem.is_some())
            .field("client_verify", &self.client_verify)
            .finish_non_exhaustive()
    }
}

impl SslSettings {
    pub fn from_proto(p: &SslConfig, origin: &str) -> anyhow::Result<Self> {
        let pem = |field: &str, value: &str, marker: &str| -> anyhow::Result<String> {
            if value.trim().is_empty() {
                anyhow::bail!("{origin}: {field} is empty; it holds PEM text");
            }
            if !value.contains(marker) {
                anyhow::bail!("{origin}: {field} is not PEM text (no `{marker}` line); the file holds PEM text inline, not a path");
            }
            Ok(value.to_string())
        };
        let key_pem = pem("server_key", &p.server_key, "PRIVATE KEY-----")?;
        let cert_pem = pem("server_cert", &p.server_cert, "-----BEGIN CERTIFICATE-----")?;
        let client_ca_pem = if p.custom_ca.trim().is_empty() {
            None
        } else {
            Some(pem(
                "custom_ca",
                &p.custom_ca,
                "-----BEGIN CERTIFICATE-----",
            )?)
        };
        if p.client_verify && client_ca_pem.is_none() {
            anyhow::bail!(
                "{origin}: client_verify needs custom_ca, the CA that client certificates chain to"
            );
        }
        Ok(SslSettings {
            key_pem,
            cert_pem,
            client_ca_pem,
            client_verify: p.client_verify,
        })
    }

    pub fn from_text(text: &str, origin: &str) -> anyhow::Result<Self> {
        let proto: SslConfig = text_format::parse("tensorflow.serving.SSLConfig", text, origin)?;
        Self::from_proto(&proto, origin)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--ssl_config_file {}: {e}", path.display()))?;
        Self::from_text(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn text(key: &str, cert: &str, ca: &str, verify: bool) -> String {
        format!(
            "server_key: {key:?}\nserver_cert: {cert:?}\ncustom_ca: {ca:?}\nclient_verify: {verify}\n"
        )
    }

    #[test]
    fn reads_tf_servings_text_format() {
        let s = SslSettings::from_text(&text(KEY, CERT, CERT, true), "ssl.config").unwrap();
        assert!(s.client_verify);
        assert_eq!(s.client_ca_pem.as_deref(), Some(CERT));
        let s = SslSettings::from_text(&text(KEY, CERT, "", false), "ssl.config").unwrap();
        assert_eq!(s.client_ca_pem, None);
        assert!(
            !format!("{s:?}").contains("MIIE"),
            "the key is never printed"
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let e = SslSettings::from_text(&text("/etc/key.pem", CERT, "", false), "ssl.config")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server_key is not PEM text"), "{e}");
        let e = SslSettings::from_text(&text(KEY, CERT, "", true), "ssl.config")
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_verify needs custom_ca"), "{e}");
        let e = SslSettings::from_text("server_key: 3 4", "ssl.config")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ssl.config:1:"), "{e}");
    }
}
