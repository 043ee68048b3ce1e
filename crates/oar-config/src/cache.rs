//! `[runners.cache]`: the distributed cache (S3; GCS and Azure are accepted but Oar does not
//! use them).
//!
//! GitLab Runner's decoder matches these keys case-insensitively, so `ServerAddress`,
//! `serveraddress` and `server_address` are the same key here too.

use secrecy::SecretString;
use serde::Deserialize;

use crate::path::KeyPath;
use crate::serde_util::Caseless;
use crate::validate::{Ctx, Issue, non_empty, non_negative, one_of};
use crate::warning::WarningKind;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CacheWire {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Shared")]
    shared: Option<bool>,
    #[serde(rename = "MaxUploadedArchiveSize")]
    max_uploaded_archive_size: Option<i64>,
    s3: Option<Caseless<S3Wire>>,
    gcs: Option<Caseless<GcsWire>>,
    azure: Option<Caseless<AzureWire>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct S3Wire {
    server_address: Option<String>,
    access_key: Option<SecretString>,
    secret_key: Option<SecretString>,
    session_token: Option<SecretString>,
    bucket_name: Option<String>,
    bucket_location: Option<String>,
    insecure: Option<bool>,
    authentication_type: Option<String>,
    server_side_encryption: Option<String>,
    #[serde(rename = "ServerSideEncryptionKeyID")]
    server_side_encryption_key_id: Option<String>,
    dual_stack: Option<bool>,
    path_style: Option<bool>,
    accelerate: Option<bool>,
    #[serde(rename = "RoleARN")]
    role_arn: Option<String>,
    #[serde(rename = "UploadRoleARN")]
    upload_role_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct GcsWire {
    #[serde(rename = "AccessID")]
    access_id: Option<String>,
    private_key: Option<SecretString>,
    credentials_file: Option<String>,
    bucket_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct AzureWire {
    account_name: Option<String>,
    account_key: Option<SecretString>,
    container_name: Option<String>,
    storage_domain: Option<String>,
}

/// The cache backend (`Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheType {
    /// S3 or an S3-compatible server (`s3`); the one Oar implements.
    S3,
    /// Google Cloud Storage (`gcs`); accepted, not implemented by Oar.
    Gcs,
    /// Azure Blob Storage (`azure`); accepted, not implemented by Oar.
    Azure,
}

impl CacheType {
    /// The config spelling (`s3`, `gcs`, `azure`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheType::S3 => "s3",
            CacheType::Gcs => "gcs",
            CacheType::Azure => "azure",
        }
    }
}

/// `AuthenticationType` of the S3 cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3AuthType {
    /// Static `AccessKey`/`SecretKey` (`access-key`).
    AccessKey,
    /// Credentials from the environment or instance profile (`iam`).
    Iam,
}

/// `ServerSideEncryption` of the S3 cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Encryption {
    /// S3-managed keys (`S3` or `AES256`).
    S3,
    /// KMS-managed keys (`KMS`).
    Kms,
    /// Dual-layer KMS (`DSSE-KMS`).
    DsseKms,
}

/// A runner's `[runners.cache]` table.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    /// `Type`. Unset (or empty): no distributed cache, only the local one in `cache_dir`.
    pub kind: Option<CacheType>,
    /// `Path`: prefix of every object key. Default: none.
    pub path: Option<String>,
    /// `Shared`: share the cache between runners (drops `runner/<short token>/` from keys).
    /// Default `false`.
    pub shared: bool,
    /// `MaxUploadedArchiveSize` in bytes. Default 0 (unset here): no limit.
    pub max_uploaded_archive_size: Option<u64>,
    /// `[runners.cache.s3]`.
    pub s3: Option<S3Config>,
    /// `[runners.cache.gcs]` (accepted, not used by Oar).
    pub gcs: Option<GcsConfig>,
    /// `[runners.cache.azure]` (accepted, not used by Oar).
    pub azure: Option<AzureConfig>,
}

/// `[runners.cache.s3]`.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// `ServerAddress`: `host[:port]` of an S3-compatible server. Default: AWS.
    pub server_address: Option<String>,
    /// `AccessKey`.
    pub access_key: Option<SecretString>,
    /// `SecretKey`.
    pub secret_key: Option<SecretString>,
    /// `SessionToken` for temporary credentials.
    pub session_token: Option<SecretString>,
    /// `BucketName`. Required for the cache to work.
    pub bucket_name: Option<String>,
    /// `BucketLocation`: the region.
    pub bucket_location: Option<String>,
    /// `Insecure`: plain HTTP. Default `false`.
    pub insecure: bool,
    /// `AuthenticationType` as written; see [`S3Config::auth_type`] for the effective one.
    pub authentication_type: Option<S3AuthType>,
    /// `ServerSideEncryption`. Default: none.
    pub server_side_encryption: Option<S3Encryption>,
    /// `ServerSideEncryptionKeyID` (KMS key id or alias).
    pub server_side_encryption_key_id: Option<String>,
    /// `DualStack`: IPv4+IPv6 endpoints. Upstream default `true` when unset.
    pub dual_stack: Option<bool>,
    /// `PathStyle`: path-style URLs. Default: virtual-host style for AWS, path style for custom
    /// servers.
    pub path_style: Option<bool>,
    /// `Accelerate`: S3 Transfer Acceleration. Default `false`.
    pub accelerate: bool,
    /// `RoleARN`: assume this role for downloads and uploads.
    pub role_arn: Option<String>,
    /// `UploadRoleARN`: assume this role for uploads (enables multipart uploads).
    pub upload_role_arn: Option<String>,
}

impl S3Config {
    /// The effective authentication type, with GitLab Runner's rule for the unset case:
    /// `iam` unless `ServerAddress`, `AccessKey` and `SecretKey` are all set.
    pub fn auth_type(&self) -> S3AuthType {
        if let Some(kind) = self.authentication_type {
            return kind;
        }
        if self.server_address.is_some() && self.access_key.is_some() && self.secret_key.is_some() {
            S3AuthType::AccessKey
        } else {
            S3AuthType::Iam
        }
    }
}

/// `[runners.cache.gcs]` (Oar does not implement a GCS cache).
#[derive(Debug, Clone, Default)]
pub struct GcsConfig {
    /// `AccessID`.
    pub access_id: Option<String>,
    /// `PrivateKey`.
    pub private_key: Option<SecretString>,
    /// `CredentialsFile`.
    pub credentials_file: Option<String>,
    /// `BucketName`.
    pub bucket_name: Option<String>,
}

/// `[runners.cache.azure]` (Oar does not implement an Azure cache).
#[derive(Debug, Clone, Default)]
pub struct AzureConfig {
    /// `AccountName`.
    pub account_name: Option<String>,
    /// `AccountKey`.
    pub account_key: Option<SecretString>,
    /// `ContainerName`.
    pub container_name: Option<String>,
    /// `StorageDomain`.
    pub storage_domain: Option<String>,
}

fn non_empty_secret(secret: Option<SecretString>) -> Option<SecretString> {
    use secrecy::ExposeSecret;
    secret.filter(|s| !s.expose_secret().is_empty())
}

impl CacheConfig {
    pub(crate) fn from_wire(wire: CacheWire, path: &KeyPath, ctx: &mut Ctx) -> Result<Self, Issue> {
        let kind = one_of(
            &path.key("Type"),
            wire.kind.as_deref(),
            &[
                ("s3", CacheType::S3),
                ("gcs", CacheType::Gcs),
                ("azure", CacheType::Azure),
            ],
            true,
        )?;
        if let Some(other @ (CacheType::Gcs | CacheType::Azure)) = kind {
            ctx.warn(
                &path.key("Type"),
                WarningKind::NotImplemented,
                format!(
                    "{} {} is not implemented by Oar (only s3); the distributed cache is \
                     disabled for this runner",
                    path.key("Type"),
                    other.as_str()
                ),
            );
        }
        let s3 = wire
            .s3
            .map(|Caseless(s3)| s3_from_wire(s3, &path.key("s3")))
            .transpose()?;
        if kind == Some(CacheType::S3) && s3.as_ref().is_none_or(|s| s.bucket_name.is_none()) {
            ctx.warn(
                path,
                WarningKind::Suspicious,
                format!(
                    "{path} has Type s3 but no [{path}.s3] BucketName; the distributed cache \
                     will not work"
                ),
            );
        }
        Ok(Self {
            kind,
            path: non_empty(wire.path),
            shared: wire.shared.unwrap_or(false),
            max_uploaded_archive_size: non_negative::<u64>(
                &path.key("MaxUploadedArchiveSize"),
                wire.max_uploaded_archive_size,
            )?
            .filter(|size| *size > 0),
            s3,
            gcs: wire.gcs.map(|Caseless(g)| GcsConfig {
                access_id: non_empty(g.access_id),
                private_key: non_empty_secret(g.private_key),
                credentials_file: non_empty(g.credentials_file),
                bucket_name: non_empty(g.bucket_name),
            }),
            azure: wire.azure.map(|Caseless(a)| AzureConfig {
                account_name: non_empty(a.account_name),
                account_key: non_empty_secret(a.account_key),
                container_name: non_empty(a.container_name),
                storage_domain: non_empty(a.storage_domain),
            }),
        })
    }
}

fn s3_from_wire(wire: S3Wire, path: &KeyPath) -> Result<S3Config, Issue> {
    Ok(S3Config {
        server_address: non_empty(wire.server_address),
        access_key: non_empty_secret(wire.access_key),
        secret_key: non_empty_secret(wire.secret_key),
        session_token: non_empty_secret(wire.session_token),
        bucket_name: non_empty(wire.bucket_name),
        bucket_location: non_empty(wire.bucket_location),
        insecure: wire.insecure.unwrap_or(false),
        authentication_type: one_of(
            &path.key("AuthenticationType"),
            wire.authentication_type.as_deref(),
            &[
                ("access-key", S3AuthType::AccessKey),
                ("iam", S3AuthType::Iam),
            ],
            true,
        )?,
        server_side_encryption: one_of(
            &path.key("ServerSideEncryption"),
            wire.server_side_encryption.as_deref(),
            &[
                ("S3", S3Encryption::S3),
                ("AES256", S3Encryption::S3),
                ("KMS", S3Encryption::Kms),
                ("DSSE-KMS", S3Encryption::DsseKms),
            ],
            true,
        )?,
        server_side_encryption_key_id: non_empty(wire.server_side_encryption_key_id),
        dual_stack: wire.dual_stack,
        path_style: wire.path_style,
        accelerate: wire.accelerate.unwrap_or(false),
        role_arn: non_empty(wire.role_arn),
        upload_role_arn: non_empty(wire.upload_role_arn),
    })
}
