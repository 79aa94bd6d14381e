//! The master-key providers: AWS KMS (or a compatible endpoint) and, for a single machine,
//! a local key file.

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use secrecy::ExposeSecret;
use ts_common::config::{Config, ConfigError, KmsProvider, check_file, require};

/// Where the master key lives.
#[derive(Clone)]
pub enum MasterKey {
    /// AWS KMS: the key never leaves KMS.
    Aws {
        /// KMS client.
        client: aws_sdk_kms::Client,
        /// Key id, ARN or alias.
        key_id: String,
    },
    /// A 256-bit key read from a file.
    Local {
        /// The key bytes.
        key: std::sync::Arc<zeroize::Zeroizing<[u8; 32]>>,
    },
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKey::Aws { key_id, .. } => f.debug_struct("Aws").field("key_id", key_id).finish(),
            MasterKey::Local { .. } => f.write_str("Local(<redacted>)"),
        }
    }
}

impl MasterKey {
    /// Builds the provider that `[kms]` names, checking what it needs.
    pub async fn from_config(config: &Config) -> Result<MasterKey, ConfigError> {
        let kms = require(&config.kms, "kms")?;
        match kms.provider {
            KmsProvider::Aws => {
                let key_id = kms
                    .key_id
                    .clone()
                    .ok_or_else(|| ConfigError::key("kms.key_id", "required for the aws provider"))?;
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &kms.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some(creds) = &kms.static_credentials {
                    loader = loader.credentials_provider(Credentials::new(
                        &creds.access_key_id,
                        creds.secret_access_key.expose_secret(),
                        None,
                        None,
                        "teamshare-config",
                    ));
                }
                let shared = loader.load().await;
                let mut builder = aws_sdk_kms::config::Builder::from(&shared);
                if let Some(endpoint) = &kms.endpoint {
                    builder = builder.endpoint_url(endpoint);
                }
                Ok(MasterKey::Aws { client: aws_sdk_kms::Client::from_conf(builder.build()), key_id })
            }
            KmsProvider::Local => {
                if config.production {
                    return Err(ConfigError::key(
                        "kms.provider",
                        "the local provider is for development only and is refused when production = true",
                    ));
                }
                let path = kms
                    .local_key_file
                    .as_ref()
                    .ok_or_else(|| ConfigError::key("kms.local_key_file", "required for the local provider"))?;
                check_file("kms.local_key_file", path)?;
                let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| {
                    ConfigError::key("kms.local_key_file", format!("cannot read {}: {e}", path.display()))
                })?);
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    ConfigError::key("kms.local_key_file", format!("{} must hold exactly 32 bytes", path.display()))
                })?;
                Ok(MasterKey::Local { key: std::sync::Arc::new(zeroize::Zeroizing::new(key)) })
            }
        }
    }
}
