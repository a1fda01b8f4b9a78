//! Identity and access: who a credential names, and what it may do, for every protocol.
//!
//! Credentials are user JWTs ([`jwt`]) and device tokens ([`token`], looked up in the device
//! registry). [`Auth::authenticate`] turns a presented credential into a [`Principal`];
//! [`Principal::allows`] answers for one [`Access`]. HTTP applies it per route
//! ([`http`]: one policy table), MQTT per packet and CoAP per request ([`edge`], through the
//! authorizer trait of `aemos-ingest`), Socket.IO at the handshake and per room, Postgres
//! clients at login ([`sql`]: the password is a user JWT).
//!
//! In `production` mode every request needs a credential. In `dev` mode a request without one
//! is [`Principal::Anonymous`] and may do anything; a credential that is presented is still
//! checked, so a wrong one is refused in both modes.

pub mod edge;
pub mod http;
pub mod jwt;
pub mod limits;
pub mod sql;
pub mod token;

use std::sync::Arc;

use clap::ValueEnum;

use crate::devices::{Device, DeviceRegistry};
pub use jwt::{JwtVerifier, User};
pub use limits::RateLimits;

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Everything open unless a credential is presented.
    Dev,
    /// Every request needs a credential; TLS beyond loopback.
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    /// Write readings (a device: only its own sensors, checked per reading).
    WriteReadings,
    /// SQL over every table.
    Query,
    /// Read one device's data: statistics, notifications, state, its Socket.IO room.
    ReadDevice(&'a str),
    /// List devices, read rule chains, health and metrics.
    ReadAll,
    /// Register, replace or remove rule chains; send commands.
    Operate,
    /// Register, change or remove devices and their tokens; reset operations state.
    Administer,
}

/// Who presented a credential.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No credential, `dev` mode only.
    Anonymous,
    User(User),
    Device(Arc<Device>),
}

impl Principal {
    pub fn allows(&self, access: &Access<'_>) -> bool {
        match self {
            Self::Anonymous => true,
            Self::User(user) => match access {
                Access::Query | Access::ReadDevice(_) | Access::ReadAll => true,
                Access::WriteReadings | Access::Operate => user.role >= Role::Operator,
                Access::Administer => user.role == Role::Admin,
            },
            Self::Device(device) => match access {
                Access::WriteReadings => true,
                Access::ReadDevice(id) => *id == &*device.id,
                _ => false,
            },
        }
    }

    /// The key of this principal's rate limit, if it has one of its own (a device, a user).
    pub fn limit_key(&self) -> Option<String> {
        match self {
            Self::Anonymous => None,
            Self::User(u) => Some(format!("user:{}", u.sub)),
            Self::Device(d) => Some(format!("device:{}", d.id)),
        }
    }

    /// A name for logs and refusals (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Self::Anonymous => "anonymous".into(),
            Self::User(u) => format!("user {:?} ({})", u.sub, u.role.as_str()),
            Self::Device(d) => format!("device {:?}", d.id),
        }
    }
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401: none presented where one is needed.
    #[error(
        "a credential is required: a user JWT or a device token as `Authorization: Bearer ...`"
    )]
    Missing,
    /// 401: presented but malformed, forged, expired or revoked.
    #[error("{0}")]
    Invalid(String),
    /// 403: valid, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 429.
    #[error("rate limit exceeded; retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
}

/// The credential checks every protocol shares.
#[derive(Debug)]
pub struct Auth {
    pub mode: Mode,
    pub jwt: Option<JwtVerifier>,
    pub registry: Arc<DeviceRegistry>,
    pub limits: RateLimits,
}

impl Auth {
    pub fn production(&self) -> bool {
        self.mode == Mode::Production
    }

    /// The principal of a presented credential (`None`: nothing presented).
    pub fn authenticate(&self, credential: Option<&str>) -> Result<Principal, AuthError> {
        let Some(credential) = credential.map(str::trim).filter(|c| !c.is_empty()) else {
            return if self.production() {
                Err(AuthError::Missing)
            } else {
                Ok(Principal::Anonymous)
            };
        };
        if token::is_device_token(credential) {
            return self
                .registry
                .by_token(credential)
                .map(Principal::Device)
                .ok_or_else(|| {
                    AuthError::Invalid("device token is not valid (unknown, or rotated)".into())
                });
        }
        if credential.split('.').count() == 3 {
            let Some(jwt) = &self.jwt else {
                return Err(AuthError::Invalid(
                    "user tokens are not accepted: the server has no --jwt-secret or --jwt-public-key".into(),
                ));
            };
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            return jwt.verify(credential, now).map(Principal::User);
        }
        Err(AuthError::Invalid(
            "credential is neither a device token (adt_...) nor a JWT".into(),
        ))
    }

    /// Authenticates, then checks one access.
    pub fn authorize(
        &self,
        credential: Option<&str>,
        access: &Access<'_>,
    ) -> Result<Principal, AuthError> {
        let principal = self.authenticate(credential)?;
        if principal.allows(access) {
            Ok(principal)
        } else {
            Err(AuthError::Forbidden(format!(
                "{} may not {}",
                principal.describe(),
                describe_access(access)
            )))
        }
    }
}

fn describe_access(access: &Access<'_>) -> String {
    match access {
        Access::WriteReadings => "write readings".into(),
        Access::Query => "run SQL queries".into(),
        Access::ReadDevice(id) => format!("read device {id:?}"),
        Access::ReadAll => "read this resource".into(),
        Access::Operate => "change rule chains or send commands (operator or admin)".into(),
        Access::Administer => "manage devices, tokens and the server (admin)".into(),
    }
}
