//! Configuration: one TOML file plus `TS_`-prefixed environment overrides, validated at start.
//!
//! `TS_AUTH__LISTEN=0.0.0.0:7101` overrides `[auth] listen`: the prefix is dropped, `__`
//! separates table levels and names are lower-cased. A value is read as a TOML scalar when it
//! parses as one (`true`, `42`) and as a string otherwise; quote it (`'"42"'`) to force a string.
//! The environment is passed in, never read globally, so tests need no `set_var`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// Environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "TS_";

/// A configuration problem, with the key it concerns. Displayed as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key has a bad value, is unknown, or is missing.
    #[error("config key `{key}`{origin}: {message}")]
    Key {
        /// Dotted key path, such as `auth.listen`.
        key: String,
        /// Where the value came from, such as " (from TS_AUTH__LISTEN)".
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A problem with one key.
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key { key: key.into(), origin: String::new(), message: message.into() }
    }
}

/// Whole-deployment configuration. Each service reads the sections it needs; `validate_for`
/// checks that those are present and usable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Marks a production deployment: development-only choices (such as the `local` KMS
    /// provider) are refused.
    #[serde(default)]
    pub production: bool,
    /// On shutdown, how long health reports NOT_SERVING before the listener closes.
    #[serde(default)]
    pub drain_delay_ms: u64,
    /// Logs, traces and metrics.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The internal CA that every mTLS peer must chain to.
    pub internal_tls: Option<InternalTlsConfig>,
    /// The system of record.
    pub mongodb: Option<MongoConfig>,
    /// Cache and shared rate-limit counters.
    pub redis: Option<RedisConfig>,
    /// The master-key provider.
    pub kms: Option<KmsConfig>,
    /// Audit trail retention.
    #[serde(default)]
    pub audit: AuditConfig,
    /// What the retention job (run by auth) purges, and how often (PRIVACY.md).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Invitation expiry and anti-spam limits.
    #[serde(default)]
    pub invitation_limits: InvitationLimits,
    /// Bounds on plaintext data keys cached in memory (keyvault and folders).
    #[serde(default)]
    pub data_key_cache: DataKeyCacheConfig,
    /// Accounts policy: tokens, verification codes, SSO issuers, the Team Sharing default.
    #[serde(default)]
    pub accounts: AccountsConfig,
    /// Outgoing email.
    pub mail: Option<MailConfig>,
    /// The auth service.
    pub auth: Option<ServiceConfig>,
    /// The keyvault service.
    pub keyvault: Option<ServiceConfig>,
    /// The folders service.
    pub folders: Option<ServiceConfig>,
    /// The invitations service.
    pub invitations: Option<ServiceConfig>,
    /// The gateway.
    pub gateway: Option<GatewayConfig>,
    /// Where internal services are reached.
    #[serde(default)]
    pub upstreams: UpstreamsConfig,
    /// Servers close (gracefully, with GOAWAY) HTTP/2 connections older than this, so that
    /// callers re-balance over replicas added since; default 300.
    #[serde(default)]
    pub max_connection_age_secs: Option<u64>,
    /// How often every certificate, key and CA bundle file is re-read, so that renewals
    /// (cert-manager) and CA rotations apply without a restart; default 30.
    #[serde(default)]
    pub cert_reload_secs: Option<u64>,
    /// How often callers resolve each upstream's host again (a headless Service's pod
    /// addresses), to balance calls over the replicas that exist now; default 15.
    #[serde(default)]
    pub upstream_dns_refresh_secs: Option<u64>,
}

impl Config {
    /// `max_connection_age_secs`, or its default.
    pub fn max_connection_age(&self) -> Duration {
        Duration::from_secs(self.max_connection_age_secs.unwrap_or(300).max(1))
    }

    /// `cert_reload_secs`, or its default.
    pub fn cert_reload(&self) -> Duration {
        Duration::from_secs(self.cert_reload_secs.unwrap_or(30).max(1))
    }

    /// `upstream_dns_refresh_secs`, or its default.
    pub fn upstream_dns_refresh(&self) -> Duration {
        Duration::from_secs(self.upstream_dns_refresh_secs.unwrap_or(15).max(1))
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log line format.
    #[serde(default)]
    pub log_format: LogFormat,
    /// A `tracing` filter, such as `info,ts_folders=debug`.
    #[serde(default = "default_log_filter")]
    pub log_filter: String,
    /// OTLP/gRPC collector endpoint, such as `http://otel-collector:4317`; traces and metrics
    /// are exported only when set.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// PEM CA bundle that an `https://` OTLP endpoint's certificate must chain to (without
    /// it, the system's roots).
    #[serde(default)]
    pub otlp_ca_cert: Option<PathBuf>,
    /// PEM client certificate for an OTLP collector that requires mTLS (with `otlp_key`).
    #[serde(default)]
    pub otlp_cert: Option<PathBuf>,
    /// PEM private key of `otlp_cert`.
    #[serde(default)]
    pub otlp_key: Option<PathBuf>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            log_filter: default_log_filter(),
            otlp_endpoint: None,
            otlp_ca_cert: None,
            otlp_cert: None,
            otlp_key: None,
        }
    }
}

fn default_log_filter() -> String {
    "info".into()
}

/// The internal CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalTlsConfig {
    /// PEM file with the internal CA certificate.
    pub ca_cert: PathBuf,
}

/// MongoDB connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string; may carry credentials and `tls=true`. Redacted in logs.
    pub uri: SecretString,
    /// Database name.
    pub database: String,
}

/// Redis connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL; may carry credentials. Redacted in logs.
    pub url: SecretString,
}

/// Which KMS holds the master key.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KmsProvider {
    /// AWS KMS (or an API-compatible endpoint).
    Aws,
    /// A master key read from a file; single-machine development only.
    Local,
}

/// Master-key provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// `aws` or `local`.
    pub provider: KmsProvider,
    /// AWS: key id, ARN or alias of the master key.
    pub key_id: Option<String>,
    /// AWS: region.
    pub region: Option<String>,
    /// AWS: endpoint override, such as a local KMS-compatible server.
    pub endpoint: Option<String>,
    /// Local: file holding 32 random bytes (created by `teamshare certs`).
    pub local_key_file: Option<PathBuf>,
    /// AWS: static credentials, for a KMS-compatible endpoint in tests; production uses
    /// the standard AWS credential chain (environment, web identity, instance role).
    pub static_credentials: Option<StaticCredentials>,
}

/// An access key pair. The secret is redacted in logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
}

/// Accounts policy, read by auth (and by the gateway for token lifetimes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    /// PEM Ed25519 private keys (PKCS#8) that sign access tokens. The first signs; all of
    /// them verify, so a new key is rolled in by putting it first and an old one rolled out
    /// once its tokens expired.
    #[serde(default)]
    pub token_signing_keys: Vec<PathBuf>,
    /// File of 32 random bytes keying the hashes of verification codes.
    pub secret_key_file: Option<PathBuf>,
    /// Access-token lifetime.
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl_secs: u64,
    /// Refresh-token (session) lifetime.
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl_secs: u64,
    /// Verification-code lifetime.
    #[serde(default = "default_code_ttl")]
    pub code_ttl_secs: u64,
    /// Tries a verification code allows.
    #[serde(default = "default_code_tries")]
    pub code_max_tries: u32,
    /// Codes sent to one email per hour.
    #[serde(default = "default_sends_per_email")]
    pub sends_per_email_per_hour: u32,
    /// Codes sent for one client address per hour.
    #[serde(default = "default_sends_per_client")]
    pub sends_per_client_per_hour: u32,
    /// Failed sign-in attempts (codes, single sign-on and refresh tokens) one client address
    /// may make per hour before its attempts are refused until the hour is over.
    #[serde(default = "default_failed_sign_ins_per_client")]
    pub failed_sign_ins_per_client_per_hour: u32,
    /// Whether Team Sharing is on for the deployment until an operator says otherwise.
    #[serde(default = "default_true")]
    pub sharing_enabled: bool,
    /// OIDC issuers accepted for single sign-on.
    #[serde(default)]
    pub sso: Vec<SsoIssuerConfig>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            token_signing_keys: Vec::new(),
            secret_key_file: None,
            access_token_ttl_secs: default_access_ttl(),
            refresh_token_ttl_secs: default_refresh_ttl(),
            code_ttl_secs: default_code_ttl(),
            code_max_tries: default_code_tries(),
            sends_per_email_per_hour: default_sends_per_email(),
            sends_per_client_per_hour: default_sends_per_client(),
            failed_sign_ins_per_client_per_hour: default_failed_sign_ins_per_client(),
            sharing_enabled: true,
            sso: Vec::new(),
        }
    }
}

fn default_access_ttl() -> u64 {
    900
}
fn default_refresh_ttl() -> u64 {
    30 * 24 * 3600
}
fn default_code_ttl() -> u64 {
    600
}
fn default_code_tries() -> u32 {
    5
}
fn default_sends_per_email() -> u32 {
    5
}
fn default_sends_per_client() -> u32 {
    30
}
fn default_failed_sign_ins_per_client() -> u32 {
    50
}
fn default_true() -> bool {
    true
}

/// One OIDC issuer for single sign-on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoIssuerConfig {
    /// The `iss` claim, such as `https://login.example.com`.
    pub issuer: String,
    /// The `aud` claim teamshare's client id has at this issuer.
    pub audience: String,
    /// The issuer's JWKS (JSON Web Key Set) as a file…
    pub jwks_file: Option<PathBuf>,
    /// …or as a URL (https; plain http only to a loopback address), fetched at start,
    /// every 10 minutes, and when a token names an unknown key (at most every 30 s).
    pub jwks_url: Option<String>,
}

/// Invitation expiry and anti-spam limits (DESIGN.md §6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvitationLimits {
    /// Days an invitation stays acceptable.
    pub ttl_days: u32,
    /// Most invitations one fetch returns, whatever page size is asked for.
    pub max_per_fetch: u32,
    /// Most pending invitations one email can have.
    pub max_pending_per_invitee: u32,
    /// Most pending invitations one folder can have.
    pub max_pending_per_folder: u32,
    /// Invitations one inviter may send per minute (sustained), at the gateway.
    pub per_inviter_per_minute: u32,
    /// Invitations one inviter may send at once.
    pub inviter_burst: u32,
    /// Invitations one license may send per minute (sustained), at the gateway.
    pub per_license_per_minute: u32,
    /// Invitations one license may send at once.
    pub license_burst: u32,
}

impl InvitationLimits {
    /// Every limit is at least 1 (a zero would refuse everything, or divide a minute by
    /// nothing), and a per-minute rate is at most 60 000 (one per millisecond: the limiter's
    /// resolution; more would mean no limit at all).
    pub fn check(&self) -> Result<(), ConfigError> {
        let fields = [
            ("ttl_days", self.ttl_days, u32::MAX),
            ("max_per_fetch", self.max_per_fetch, u32::MAX),
            ("max_pending_per_invitee", self.max_pending_per_invitee, u32::MAX),
            ("max_pending_per_folder", self.max_pending_per_folder, u32::MAX),
            ("per_inviter_per_minute", self.per_inviter_per_minute, 60_000),
            ("inviter_burst", self.inviter_burst, u32::MAX),
            ("per_license_per_minute", self.per_license_per_minute, 60_000),
            ("license_burst", self.license_burst, u32::MAX),
        ];
        for (name, value, most) in fields {
            if value == 0 || value > most {
                let range = if most == u32::MAX { "at least 1".to_owned() } else { format!("from 1 to {most}") };
                return Err(ConfigError::key(
                    format!("invitation_limits.{name}"),
                    format!("must be {range}, not {value}"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for InvitationLimits {
    fn default() -> Self {
        InvitationLimits {
            ttl_days: 7,
            max_per_fetch: 20,
            max_pending_per_invitee: 50,
            max_pending_per_folder: 200,
            // A manager can invite a team of 20 (and a few more) in one sitting; after that,
            // two a minute: a spammer gets 25 + 2,880 a day at most, within the pending caps.
            per_inviter_per_minute: 2,
            inviter_burst: 25,
            per_license_per_minute: 60,
            license_burst: 100,
        }
    }
}

/// Audit trail settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Days an audit event is kept (a TTL index deletes older ones).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention_days: default_retention_days() }
    }
}

fn default_retention_days() -> u32 {
    365
}

/// The retention job: auth runs it every `interval_secs` (and on the operator's
/// `RunRetention`), purging expired codes, ended sessions, closed invitations and audit
/// events past `audit.retention_days`, and completing unfinished erasures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Seconds between runs; default 3600.
    #[serde(default = "default_retention_interval")]
    pub interval_secs: u64,
    /// Days a session is kept after it expired or ended; default 30.
    #[serde(default = "default_thirty")]
    pub ended_sessions_days: u32,
    /// Days an invitation is kept after it was accepted, declined, revoked or expired;
    /// default 30.
    #[serde(default = "default_thirty")]
    pub closed_invitations_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_secs: default_retention_interval(),
            ended_sessions_days: default_thirty(),
            closed_invitations_days: default_thirty(),
        }
    }
}

fn default_retention_interval() -> u64 {
    3600
}

fn default_thirty() -> u32 {
    30
}

/// Bounds on cached plaintext data keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataKeyCacheConfig {
    /// Longest time a plaintext key is served from memory.
    #[serde(default = "default_cache_max_age_secs")]
    pub max_age_secs: u64,
    /// Most look-ups one cached key serves before it is unwrapped again.
    #[serde(default = "default_cache_max_uses")]
    pub max_uses: u64,
    /// Most keys held.
    #[serde(default = "default_cache_max_entries")]
    pub max_entries: usize,
}

impl Default for DataKeyCacheConfig {
    fn default() -> Self {
        DataKeyCacheConfig {
            max_age_secs: default_cache_max_age_secs(),
            max_uses: default_cache_max_uses(),
            max_entries: default_cache_max_entries(),
        }
    }
}

impl DataKeyCacheConfig {
    /// As cache bounds.
    pub fn limits(&self) -> ts_crypto::CacheLimits {
        ts_crypto::CacheLimits {
            max_age: std::time::Duration::from_secs(self.max_age_secs),
            max_uses: self.max_uses,
            max_entries: self.max_entries,
        }
    }
}

fn default_cache_max_age_secs() -> u64 {
    300
}

fn default_cache_max_uses() -> u64 {
    100_000
}

fn default_cache_max_entries() -> usize {
    10_000
}

/// An internal service's listener and identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// mTLS gRPC listen address.
    pub listen: SocketAddr,
    /// Optional plaintext listener that serves only `grpc.health.v1`, for kubelet probes
    /// (which cannot present a client certificate).
    pub health_listen: Option<SocketAddr>,
    /// PEM certificate naming this service, signed by the internal CA.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
}

/// The gateway: a public TLS listener, plus a client identity for calling internal services.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Public TLS gRPC listen address.
    pub listen: SocketAddr,
    /// Optional plaintext health-only listener, for kubelet probes.
    pub health_listen: Option<SocketAddr>,
    /// PEM certificate of the public listener.
    pub public_cert: PathBuf,
    /// PEM private key of `public_cert`.
    pub public_key: PathBuf,
    /// PEM client certificate naming the gateway, signed by the internal CA.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// Deadline for each downstream call, in milliseconds.
    #[serde(default = "default_downstream_timeout_ms")]
    pub downstream_timeout_ms: u64,
    /// Largest accepted request message, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Expect a PROXY protocol v2 header before TLS on every public connection (a load
    /// balancer that adds one, such as an AWS NLB with proxy protocol on), and take the
    /// client's address from it. Off by default. With it on, `trusted_proxies` must name the
    /// load balancers: a connection from any other peer, or without the header, is refused.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Networks (CIDR; IPv4 written as IPv4) of the proxies in front of the gateway: the only
    /// peers whose PROXY header (with `proxy_protocol`) or `x-forwarded-for` is believed; from
    /// `x-forwarded-for` the client's address is the right-most entry that is not one of
    /// them. Empty by default (the header is ignored).
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

fn default_downstream_timeout_ms() -> u64 {
    5_000
}

fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}

/// Where one internal service is reached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `https://host:port`.
    pub url: String,
    /// TLS name to verify in the server's certificate; defaults to the service name.
    pub server_name: Option<String>,
}

/// Where internal services are reached; each caller needs only its callees.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamsConfig {
    /// auth.
    pub auth: Option<Upstream>,
    /// keyvault.
    pub keyvault: Option<Upstream>,
    /// folders.
    pub folders: Option<Upstream>,
    /// invitations.
    pub invitations: Option<Upstream>,
}

impl UpstreamsConfig {
    /// The upstream for a service name, or a config error naming `upstreams.<name>`.
    pub fn get(&self, name: &str) -> Result<&Upstream, ConfigError> {
        let found = match name {
            "auth" => &self.auth,
            "keyvault" => &self.keyvault,
            "folders" => &self.folders,
            "invitations" => &self.invitations,
            _ => &None,
        };
        found.as_ref().ok_or_else(|| ConfigError::key(format!("upstreams.{name}"), "missing section"))
    }
}

impl Config {
    /// Loads `path` (if given), applies `TS_` overrides from `env`, and resolves relative
    /// paths against the file's directory.
    pub fn load<I, K, V>(path: Option<&Path>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut root = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: one_line(e.message()) })?
            }
            None => toml::Table::new(),
        };
        let mut origins = BTreeMap::new();
        for (name, value) in env {
            let (name, value) = (name.as_ref(), value.as_ref());
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            if rest == "CONFIG" {
                continue; // the config file path itself, consumed by the binary
            }
            let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut root, &segments, parse_scalar(value)).map_err(|message| ConfigError::Key {
                key: segments.join("."),
                origin: format!(" (from {name})"),
                message,
            })?;
            origins.insert(segments.join("."), name.to_owned());
        }
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            let key = e.path().to_string();
            let origin = origins.get(&key).map(|n| format!(" (from {n})")).unwrap_or_default();
            let message = one_line(&e.into_inner().to_string());
            // toml repeats the key at the end of some messages; it is already in front.
            let message = message.strip_suffix(&format!(" in `{key}`")).map(str::to_owned).unwrap_or(message);
            ConfigError::Key { key, origin, message }
        })?;
        config.invitation_limits.check()?;
        if let Some(g) = &config.gateway
            && g.proxy_protocol
            && g.trusted_proxies.is_empty()
        {
            return Err(ConfigError::key(
                "gateway.trusted_proxies",
                "proxy_protocol = true needs the load balancers' networks here: a PROXY header is believed only from them",
            ));
        }
        if let Some(dir) = path.and_then(Path::parent) {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let Some(t) = &mut self.internal_tls {
            fix(&mut t.ca_cert);
        }
        if let Some(k) = &mut self.kms {
            k.local_key_file.as_mut().map(fix);
        }
        self.accounts.token_signing_keys.iter_mut().for_each(fix);
        self.accounts.secret_key_file.as_mut().map(fix);
        self.accounts.sso.iter_mut().for_each(|s| {
            s.jwks_file.as_mut().map(fix);
        });
        if let Some(MailConfig::File { dir }) = &mut self.mail {
            fix(dir);
        }
        for s in [&mut self.auth, &mut self.keyvault, &mut self.folders, &mut self.invitations].into_iter().flatten() {
            fix(&mut s.cert);
            fix(&mut s.key);
        }
        if let Some(g) = &mut self.gateway {
            for p in [&mut g.public_cert, &mut g.public_key, &mut g.cert, &mut g.key] {
                fix(p);
            }
        }
        let t = &mut self.telemetry;
        for p in [&mut t.otlp_ca_cert, &mut t.otlp_cert, &mut t.otlp_key].into_iter().flatten() {
            fix(p);
        }
    }
}

/// Reads a required section, naming it when missing.
pub fn require<'a, T>(section: &'a Option<T>, key: &str) -> Result<&'a T, ConfigError> {
    section.as_ref().ok_or_else(|| ConfigError::key(key, "missing section"))
}

/// Checks that a configured file can be read, naming the key when it cannot.
pub fn check_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::metadata(path).map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", path.display()))).and_then(
        |m| if m.is_file() { Ok(()) } else { Err(ConfigError::key(key, format!("{} is not a file", path.display()))) },
    )
}

fn parse_scalar(value: &str) -> toml::Value {
    match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v) if v.is_str() || v.is_bool() || v.is_integer() || v.is_float() => v,
            _ => toml::Value::String(value.to_owned()),
        },
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, segments: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = segments.split_last().ok_or("empty key")?;
    if segments.iter().any(String::is_empty) {
        return Err("empty key segment".into());
    }
    let mut cur = table;
    for seg in parents {
        let entry = cur.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| format!("`{seg}` is not a table"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How mail leaves the system.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum MailConfig {
    /// Writes each message as a JSON file in `dir`; development and tests only.
    File {
        /// Directory for message files.
        dir: PathBuf,
    },
    /// SMTP submission.
    Smtp {
        /// Server host.
        host: String,
        /// Server port (587 for STARTTLS, 465 for TLS).
        #[serde(default = "default_smtp_port")]
        port: u16,
        /// `starttls` (default), `tls`, or `none` (local relays only).
        #[serde(default)]
        security: SmtpSecurity,
        /// User name, if the server wants one.
        username: Option<String>,
        /// Password; redacted in logs.
        password: Option<secrecy::SecretString>,
        /// From address, such as `teamshare <no-reply@example.com>`.
        from: String,
    },
}

fn default_smtp_port() -> u16 {
    587
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Upgrade with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte.
    Tls,
    /// Plaintext; only for a relay on localhost.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("c.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn env_overrides_file_and_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "[auth]\nlisten = \"127.0.0.1:1\"\ncert = \"a.pem\"\nkey = \"/abs/a.key\"\n");
        let c = Config::load(Some(&p), [("TS_AUTH__LISTEN", "127.0.0.1:2"), ("OTHER", "x")]).unwrap();
        let auth = c.auth.unwrap();
        assert_eq!(auth.listen.port(), 2);
        assert_eq!(auth.cert, dir.path().join("a.pem"));
        assert_eq!(auth.key, PathBuf::from("/abs/a.key"));
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "[mongodb]\nuri = \"mongodb://x\"\ndatabase = \"d\"\nshards = 3\n");
        let e = Config::load(Some(&p), Vec::<(String, String)>::new()).unwrap_err().to_string();
        assert!(e.contains("mongodb") && e.contains("shards"), "{e}");
    }

    #[test]
    fn bad_port_from_env_names_the_variable() {
        let e =
            Config::load(None, [("TS_AUTH__LISTEN", "127.0.0.1:99999"), ("TS_AUTH__CERT", "a"), ("TS_AUTH__KEY", "b")])
                .unwrap_err()
                .to_string();
        assert!(e.contains("auth.listen") && e.contains("TS_AUTH__LISTEN"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn numeric_looking_strings_can_be_quoted() {
        let c = Config::load(None, [("TS_MONGODB__URI", "mongodb://h"), ("TS_MONGODB__DATABASE", "\"42\"")]).unwrap();
        assert_eq!(c.mongodb.unwrap().database, "42");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = Config::load(None, [("TS_MONGODB__URI", "mongodb://user:hunter2@h"), ("TS_MONGODB__DATABASE", "d")])
            .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
