//! The master-key providers behind one trait: AWS KMS (or a compatible endpoint) and, for a
//! single machine, a local key file. Providers wrap and unwrap data keys with an encryption
//! context of `{folder_id, key_version}`; the plaintext master key never leaves AWS KMS. An old
//! master key is retired through the same trait (described, disabled, scheduled for deletion),
//! which only AWS KMS can do.

use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use secrecy::ExposeSecret;
use ts_config::{Config, ConfigError, KmsProvider, check_file, require};
use ts_crypto::{DataKey, Envelope, FieldRef};
use zeroize::Zeroize;

/// What a data key is bound to in KMS: its folder and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyContext<'a> {
    /// Folder id.
    pub folder_id: &'a str,
    /// Data-key version.
    pub version: u32,
}

/// A data key as stored: wrapped by a master key.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Provider ciphertext.
    pub blob: Vec<u8>,
    /// The master key that wrapped it (an ARN for AWS).
    pub master_key_id: String,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKey").field("master_key_id", &self.master_key_id).field("len", &self.blob.len()).finish()
    }
}

/// Why a KMS call failed. Messages carry the provider's error code, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// KMS could not be reached or is throttling: retry later.
    #[error("kms unavailable: {0}")]
    Unavailable(String),
    /// KMS refused: wrong context, wrong or disabled master key, corrupt blob.
    #[error("kms refused: {0}")]
    Rejected(String),
    /// The provider cannot do this at all (the local provider has no KMS key to retire).
    #[error("{0}")]
    Unsupported(String),
}

/// A master key as KMS describes it, for retiring it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeyInfo {
    /// The canonical id (ARN), as stored with the data keys it wraps.
    pub arn: String,
    /// The provider's bare key id: what DisableKey and ScheduleKeyDeletion are given (moto, the
    /// test KMS, takes no ARN there).
    pub key_id: String,
    /// Where the key is in its life.
    pub state: MasterKeyState,
    /// When KMS deletes the key, once its deletion is scheduled.
    pub deletion_date: Option<SystemTime>,
}

/// A master key's state in KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeyState {
    /// Usable.
    Enabled,
    /// Refuses every cryptographic operation until enabled again.
    Disabled,
    /// Disabled, and deleted for good at its deletion date unless the deletion is cancelled.
    PendingDeletion,
    /// Any other state, as KMS spells it (such as `PendingImport` or `Unavailable`).
    Other(String),
}

impl MasterKeyState {
    /// The state as KMS spells it.
    pub fn as_str(&self) -> &str {
        match self {
            MasterKeyState::Enabled => "Enabled",
            MasterKeyState::Disabled => "Disabled",
            MasterKeyState::PendingDeletion => "PendingDeletion",
            MasterKeyState::Other(s) => s,
        }
    }
}

/// What the local provider answers to the calls that retire a master key.
pub const LOCAL_CANNOT_RETIRE: &str = "the local provider has no key to retire; replace the key file";

/// A master-key provider.
#[tonic::async_trait]
pub trait Kms: Send + Sync + 'static {
    /// Creates a fresh 256-bit data key under `master_key_id`: plaintext and wrapped form.
    async fn generate(&self, master_key_id: &str, ctx: KeyContext<'_>) -> Result<(DataKey, WrappedKey), KmsError>;
    /// Unwraps a stored data key; the context must match the one it was made with.
    async fn unwrap(&self, wrapped: &WrappedKey, ctx: KeyContext<'_>) -> Result<DataKey, KmsError>;
    /// Re-encrypts a wrapped key under another master key without exposing the plaintext.
    async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        ctx: KeyContext<'_>,
        new_master_key_id: &str,
    ) -> Result<WrappedKey, KmsError>;
    /// The canonical id (ARN) of a key id or alias, as stored with wrapped keys.
    async fn resolve(&self, master_key_id: &str) -> Result<String, KmsError>;
    /// A master key's ids and state, or `None` when KMS has no such key (never had, or has
    /// deleted it).
    async fn describe(&self, master_key_id: &str) -> Result<Option<MasterKeyInfo>, KmsError>;
    /// Disables a master key: KMS refuses to unwrap anything with it until it is enabled again.
    async fn disable(&self, key_id: &str) -> Result<(), KmsError>;
    /// Schedules a master key's deletion after `pending_window_days` (7 to 30); returns the
    /// deletion date when KMS says it.
    async fn schedule_deletion(&self, key_id: &str, pending_window_days: u32) -> Result<Option<SystemTime>, KmsError>;
}

/// The provider `[kms]` names, and the master key id new data keys are made under.
pub async fn from_config(config: &Config) -> Result<(Arc<dyn Kms>, String), ConfigError> {
    let kms = require(&config.kms, "kms")?;
    match kms.provider {
        KmsProvider::Aws => {
            let key_id =
                kms.key_id.clone().ok_or_else(|| ConfigError::key("kms.key_id", "required for the aws provider"))?;
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(region) = &kms.region {
                loader = loader.region(aws_config::Region::new(region.clone()));
            }
            if let Some(creds) = &kms.static_credentials {
                loader = loader.credentials_provider(aws_sdk_kms::config::Credentials::new(
                    &creds.access_key_id,
                    creds.secret_access_key.expose_secret(),
                    None,
                    None,
                    "teamshare-config",
                ));
            }
            let timeouts = aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .operation_timeout(std::time::Duration::from_secs(10))
                .build();
            let shared = loader.timeout_config(timeouts).load().await;
            let mut builder = aws_sdk_kms::config::Builder::from(&shared);
            if let Some(endpoint) = &kms.endpoint {
                builder = builder.endpoint_url(endpoint);
            }
            let aws = AwsKms { client: aws_sdk_kms::Client::from_conf(builder.build()) };
            Ok((Arc::new(Measured::new("aws", aws)), key_id))
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
            let mut bytes = std::fs::read(path)
                .map_err(|e| ConfigError::key("kms.local_key_file", format!("cannot read {}: {e}", path.display())))?;
            let key = DataKey::from_slice(0, &bytes);
            bytes.zeroize();
            let key = key.ok_or_else(|| {
                ConfigError::key("kms.local_key_file", format!("{} must hold exactly 32 bytes", path.display()))
            })?;
            Ok((Arc::new(Measured::new("local", LocalKms { master: key })), LOCAL_KEY_ID.to_owned()))
        }
    }
}

/// AWS KMS.
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
}

impl AwsKms {
    /// Uses an already-configured client.
    pub fn new(client: aws_sdk_kms::Client) -> Self {
        AwsKms { client }
    }
}

const TRANSIENT_CODES: &[&str] = &[
    "KMSInternalException",
    "ThrottlingException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "LimitExceededException",
];

fn classify<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(op: &str, e: SdkError<E, R>) -> KmsError {
    match &e {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or("unknown");
            let message = format!("{op}: {code}: {}", ctx.err().message().unwrap_or_default());
            if TRANSIENT_CODES.contains(&code) { KmsError::Unavailable(message) } else { KmsError::Rejected(message) }
        }
        SdkError::TimeoutError(_) => KmsError::Unavailable(format!("{op}: timed out")),
        SdkError::DispatchFailure(_) => KmsError::Unavailable(format!("{op}: cannot reach kms")),
        _ => KmsError::Unavailable(format!("{op}: bad response from kms")),
    }
}

fn context_pairs(ctx: KeyContext<'_>) -> [(String, String); 2] {
    [("folder_id".to_owned(), ctx.folder_id.to_owned()), ("key_version".to_owned(), ctx.version.to_string())]
}

fn into_key(version: u32, blob: Option<Blob>) -> Result<DataKey, KmsError> {
    let mut bytes = blob.map(Blob::into_inner).unwrap_or_default();
    let key = DataKey::from_slice(version, &bytes);
    bytes.zeroize();
    key.ok_or_else(|| KmsError::Rejected("kms returned a key that is not 32 bytes".into()))
}

#[tonic::async_trait]
impl Kms for AwsKms {
    async fn generate(&self, master_key_id: &str, ctx: KeyContext<'_>) -> Result<(DataKey, WrappedKey), KmsError> {
        let mut req = self.client.generate_data_key().key_id(master_key_id).key_spec(DataKeySpec::Aes256);
        for (k, v) in context_pairs(ctx) {
            req = req.encryption_context(k, v);
        }
        let mut out = req.send().await.map_err(|e| classify("GenerateDataKey", e))?;
        let key = into_key(ctx.version, out.plaintext.take())?;
        let blob = out
            .ciphertext_blob
            .take()
            .map(Blob::into_inner)
            .ok_or_else(|| KmsError::Rejected("GenerateDataKey returned no ciphertext".into()))?;
        let master_key_id = out.key_id.take().unwrap_or_else(|| master_key_id.to_owned());
        Ok((key, WrappedKey { blob, master_key_id }))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: KeyContext<'_>) -> Result<DataKey, KmsError> {
        let mut req =
            self.client.decrypt().ciphertext_blob(Blob::new(wrapped.blob.clone())).key_id(&wrapped.master_key_id);
        for (k, v) in context_pairs(ctx) {
            req = req.encryption_context(k, v);
        }
        let mut out = req.send().await.map_err(|e| classify("Decrypt", e))?;
        into_key(ctx.version, out.plaintext.take())
    }

    async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        ctx: KeyContext<'_>,
        new_master_key_id: &str,
    ) -> Result<WrappedKey, KmsError> {
        let mut req = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.blob.clone()))
            .source_key_id(&wrapped.master_key_id)
            .destination_key_id(new_master_key_id);
        for (k, v) in context_pairs(ctx) {
            req = req.source_encryption_context(k.clone(), v.clone()).destination_encryption_context(k, v);
        }
        let mut out = req.send().await.map_err(|e| classify("ReEncrypt", e))?;
        let blob = out
            .ciphertext_blob
            .take()
            .map(Blob::into_inner)
            .ok_or_else(|| KmsError::Rejected("ReEncrypt returned no ciphertext".into()))?;
        Ok(WrappedKey { blob, master_key_id: out.key_id.take().unwrap_or_else(|| new_master_key_id.to_owned()) })
    }

    async fn resolve(&self, master_key_id: &str) -> Result<String, KmsError> {
        let out =
            self.client.describe_key().key_id(master_key_id).send().await.map_err(|e| classify("DescribeKey", e))?;
        out.key_metadata()
            .and_then(|m| m.arn().map(str::to_owned))
            .ok_or_else(|| KmsError::Rejected(format!("DescribeKey: no ARN for {master_key_id}")))
    }

    async fn describe(&self, master_key_id: &str) -> Result<Option<MasterKeyInfo>, KmsError> {
        let out = match self.client.describe_key().key_id(master_key_id).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => return Ok(None),
            Err(e) => return Err(classify("DescribeKey", e)),
        };
        let meta = out
            .key_metadata()
            .ok_or_else(|| KmsError::Rejected(format!("DescribeKey: no metadata for {master_key_id}")))?;
        let arn = meta.arn().ok_or_else(|| KmsError::Rejected(format!("DescribeKey: no ARN for {master_key_id}")))?;
        let state = match meta.key_state() {
            Some(KeyState::Enabled) => MasterKeyState::Enabled,
            Some(KeyState::Disabled) => MasterKeyState::Disabled,
            Some(KeyState::PendingDeletion) => MasterKeyState::PendingDeletion,
            Some(other) => MasterKeyState::Other(other.as_str().to_owned()),
            None => MasterKeyState::Other("unknown".to_owned()),
        };
        Ok(Some(MasterKeyInfo {
            arn: arn.to_owned(),
            key_id: meta.key_id().to_owned(),
            state,
            deletion_date: meta.deletion_date().and_then(|d| SystemTime::try_from(*d).ok()),
        }))
    }

    async fn disable(&self, key_id: &str) -> Result<(), KmsError> {
        self.client.disable_key().key_id(key_id).send().await.map(drop).map_err(|e| classify("DisableKey", e))
    }

    async fn schedule_deletion(&self, key_id: &str, pending_window_days: u32) -> Result<Option<SystemTime>, KmsError> {
        let days = i32::try_from(pending_window_days).map_err(|_| {
            KmsError::Rejected(format!("ScheduleKeyDeletion: {pending_window_days} days is out of range"))
        })?;
        let out = self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(days)
            .send()
            .await
            .map_err(|e| classify("ScheduleKeyDeletion", e))?;
        Ok(out.deletion_date().and_then(|d| SystemTime::try_from(*d).ok()))
    }
}

/// Id recorded for keys wrapped by the local provider.
pub const LOCAL_KEY_ID: &str = "local";

/// A master key read from a file: data keys are sealed with it as field envelopes bound to
/// their folder and version. Development only.
pub struct LocalKms {
    master: DataKey,
}

impl std::fmt::Debug for LocalKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKms(<redacted>)")
    }
}

impl LocalKms {
    /// From 32 key bytes.
    pub fn new(master: [u8; 32]) -> Self {
        LocalKms { master: DataKey::new(0, master) }
    }

    fn field(ctx: KeyContext<'_>) -> (String, String) {
        ("data-key".to_owned(), format!("v{}", ctx.version))
    }
}

#[tonic::async_trait]
impl Kms for LocalKms {
    async fn generate(&self, _master_key_id: &str, ctx: KeyContext<'_>) -> Result<(DataKey, WrappedKey), KmsError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| KmsError::Unavailable("random source failed".into()))?;
        let key = DataKey::new(ctx.version, bytes);
        bytes.zeroize();
        let (item, field) = Self::field(ctx);
        let env = Envelope::seal(
            &self.master,
            FieldRef { folder_id: ctx.folder_id, item_id: &item, field: &field },
            key.expose_bytes(),
        )
        .map_err(|e| KmsError::Rejected(e.to_string()))?;
        Ok((key, WrappedKey { blob: env.to_bytes(), master_key_id: LOCAL_KEY_ID.to_owned() }))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: KeyContext<'_>) -> Result<DataKey, KmsError> {
        let (item, field) = Self::field(ctx);
        let env = Envelope::from_bytes(&wrapped.blob).map_err(|e| KmsError::Rejected(e.to_string()))?;
        let bytes = env
            .open(&self.master, FieldRef { folder_id: ctx.folder_id, item_id: &item, field: &field })
            .map_err(|e| KmsError::Rejected(e.to_string()))?;
        DataKey::from_slice(ctx.version, &bytes).ok_or_else(|| KmsError::Rejected("wrapped key is not 32 bytes".into()))
    }

    async fn rewrap(&self, _wrapped: &WrappedKey, _ctx: KeyContext<'_>, _new: &str) -> Result<WrappedKey, KmsError> {
        Err(KmsError::Unsupported("master-key rewrap needs the aws provider".into()))
    }

    async fn resolve(&self, master_key_id: &str) -> Result<String, KmsError> {
        Ok(master_key_id.to_owned())
    }

    async fn describe(&self, _master_key_id: &str) -> Result<Option<MasterKeyInfo>, KmsError> {
        Err(KmsError::Unsupported(LOCAL_CANNOT_RETIRE.into()))
    }

    async fn disable(&self, _key_id: &str) -> Result<(), KmsError> {
        Err(KmsError::Unsupported(LOCAL_CANNOT_RETIRE.into()))
    }

    async fn schedule_deletion(&self, _key_id: &str, _days: u32) -> Result<Option<SystemTime>, KmsError> {
        Err(KmsError::Unsupported(LOCAL_CANNOT_RETIRE.into()))
    }
}

/// A provider that records each call's latency and outcome as metrics
/// (`kms.requests`, `kms.duration`) for dashboards and alerts.
pub struct Measured<K> {
    inner: K,
    provider: &'static str,
    requests: opentelemetry::metrics::Counter<u64>,
    duration: opentelemetry::metrics::Histogram<f64>,
}

impl<K> Measured<K> {
    /// Wraps `inner`, labelling its metrics with `provider`.
    pub fn new(provider: &'static str, inner: K) -> Self {
        let meter = opentelemetry::global::meter("teamshare");
        Measured {
            inner,
            provider,
            requests: meter.u64_counter("kms.requests").with_description("KMS calls by operation and outcome").build(),
            duration: meter.f64_histogram("kms.duration").with_unit("ms").with_description("KMS call latency").build(),
        }
    }

    fn record<T>(&self, op: &'static str, started: std::time::Instant, result: &Result<T, KmsError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(KmsError::Unavailable(_)) => "unavailable",
            Err(KmsError::Rejected(_)) => "rejected",
            Err(KmsError::Unsupported(_)) => "unsupported",
        };
        let attrs = [
            opentelemetry::KeyValue::new("provider", self.provider),
            opentelemetry::KeyValue::new("op", op),
            opentelemetry::KeyValue::new("outcome", outcome),
        ];
        self.requests.add(1, &attrs);
        self.duration.record(started.elapsed().as_secs_f64() * 1000.0, &attrs);
    }
}

#[tonic::async_trait]
impl<K: Kms> Kms for Measured<K> {
    async fn generate(&self, master_key_id: &str, ctx: KeyContext<'_>) -> Result<(DataKey, WrappedKey), KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.generate(master_key_id, ctx).await;
        self.record("generate", started, &result);
        result
    }

    async fn unwrap(&self, wrapped: &WrappedKey, ctx: KeyContext<'_>) -> Result<DataKey, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.unwrap(wrapped, ctx).await;
        self.record("unwrap", started, &result);
        result
    }

    async fn rewrap(
        &self,
        wrapped: &WrappedKey,
        ctx: KeyContext<'_>,
        new_master_key_id: &str,
    ) -> Result<WrappedKey, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.rewrap(wrapped, ctx, new_master_key_id).await;
        self.record("rewrap", started, &result);
        result
    }

    async fn resolve(&self, master_key_id: &str) -> Result<String, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.resolve(master_key_id).await;
        self.record("resolve", started, &result);
        result
    }

    async fn describe(&self, master_key_id: &str) -> Result<Option<MasterKeyInfo>, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.describe(master_key_id).await;
        self.record("describe", started, &result);
        result
    }

    async fn disable(&self, key_id: &str) -> Result<(), KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.disable(key_id).await;
        self.record("disable", started, &result);
        result
    }

    async fn schedule_deletion(&self, key_id: &str, pending_window_days: u32) -> Result<Option<SystemTime>, KmsError> {
        let started = std::time::Instant::now();
        let result = self.inner.schedule_deletion(key_id, pending_window_days).await;
        self.record("schedule_deletion", started, &result);
        result
    }
}
