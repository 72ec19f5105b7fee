//! Who is asking, and whether they may ask now.
//!
//! An operator proves who they are with a bearer token the hub's
//! administrator issued, or with a client certificate of the network CA
//! naming an operator. Anyone else is the public, if the public tier is on.
//! A token that is presented but wrong is an error, never a silent fall back
//! to the public tier. Identity never comes from anything else in the
//! request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use tabadul_certs::Role;

use super::{ApiError, Connection, Front};
use crate::federate::Caller;

/// The caller of one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    Operator {
        name: String,
        via: Via,
    },
    /// `name` is the day's pseudonym of `addr` ([`super::pseudonym`]): the
    /// log and traces see only it; the rate limiter keys on the address.
    Public {
        addr: IpAddr,
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Token,
    Certificate,
}

impl Principal {
    /// How the hub's log names the caller.
    pub fn log_name(&self) -> String {
        match self {
            Principal::Operator { name, via: Via::Token } => format!("operator-token:{name}"),
            Principal::Operator { name, via: Via::Certificate } => name.clone(),
            Principal::Public { name, .. } => name.clone(),
        }
    }

    pub fn caller(&self) -> Caller {
        Caller {
            name: self.log_name(),
            audience: match self {
                Principal::Operator { .. } => "",
                Principal::Public { .. } => "public",
            },
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator { .. })
    }

    /// The rate limiter's key: one bucket per operator, one per address
    /// for the public.
    fn bucket(&self) -> String {
        match self {
            Principal::Operator { name, via } => format!("{via:?}:{name}"),
            Principal::Public { addr, .. } => format!("public:{addr}"),
        }
    }
}

impl FromRequestParts<Arc<Front>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, front: &Arc<Front>) -> Result<Self, ApiError> {
        let sdmx = parts.uri.path().starts_with("/sdmx");
        let fail = |status, message: String| {
            let e = ApiError::new(status, message);
            if sdmx { e.sdmx() } else { e }
        };
        let conn = parts.extensions.get::<Connection>().cloned().ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "no connection information".into()))?;
        let principal = if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                // The scheme is case-insensitive (RFC 9110 §11.1).
                .and_then(|v| v.trim_start().split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token)
                .ok_or_else(|| fail(StatusCode::UNAUTHORIZED, "Authorization must be \"Bearer <operator token>\"".into()))?;
            refresh_tokens(front).await;
            let name = front.tokens.check(token.trim()).map_err(|why| fail(StatusCode::UNAUTHORIZED, why.to_string()))?;
            Principal::Operator { name, via: Via::Token }
        } else if let Some(identity) = &conn.identity {
            if identity.network() != front.hub.identity.network() || identity.role() != Role::Operator {
                return Err(fail(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{identity} may not use the front door with its certificate: it serves operators of network {:?} (or the public, without a certificate)",
                        front.hub.identity.network()
                    ),
                ));
            }
            Principal::Operator { name: identity.to_string(), via: Via::Certificate }
        } else if front.config.public_tier {
            Principal::Public { addr: conn.addr.ip(), name: front.pseudonyms.name(conn.addr.ip()) }
        } else {
            return Err(fail(StatusCode::UNAUTHORIZED, "this hub serves operators only: present an operator token or certificate".into()));
        };
        tracing::Span::current().record("who", principal.log_name());
        if let Err(wait) = front.limiter.admit(&principal.bucket()) {
            let mut e = fail(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{} is over its limit of {} requests per minute; retry in {wait} s", principal.log_name(), front.config.rate_per_minute),
            );
            e.retry_after = Some(wait);
            return Err(e);
        }
        Ok(principal)
    }
}

/// Picks up a changed token file, and logs the change in the hub's signed
/// log so an auditor can see which tokens were live when.
async fn refresh_tokens(front: &Front) {
    match front.tokens.refresh() {
        Ok(None) => {}
        Ok(Some(records)) => {
            let mut entry = tabadul_audit::Entry::now("operator-tokens", "local-admin");
            entry.decision = "ok".into();
            let now = time::OffsetDateTime::now_utc();
            entry.detail = records
                .iter()
                .map(|r| {
                    let state = if r.revoked.is_some() {
                        "revoked"
                    } else if r.live_at(now) {
                        "live"
                    } else {
                        "expired"
                    };
                    format!("{}:{}:{state}", r.name, r.id)
                })
                .collect::<Vec<_>>()
                .join(" ");
            let log = front.hub.log.clone();
            match tokio::task::spawn_blocking(move || log.append(&entry, None)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot log the token change"),
                Err(e) => tracing::error!(error = %e, "cannot log the token change"),
            }
            tracing::info!(tokens = records.len(), "operator tokens reloaded");
        }
        Err(e) => tracing::error!(error = %e, "cannot read the operator token file; keeping the tokens loaded before"),
    }
}

/// Token buckets: `rate_per_minute` sustained, `burst` at once.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets kept before idle ones are dropped (bounds memory under a flood
/// of public addresses).
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    pub fn new(rate_per_minute: u32, burst: u32) -> Self {
        RateLimiter { per_second: f64::from(rate_per_minute.max(1)) / 60.0, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `key`'s bucket, or says how many seconds
    /// until one is available.
    pub fn admit(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let full = self.burst;
            let rate = self.per_second;
            buckets.retain(|_, (level, at)| *level + now.duration_since(*at).as_secs_f64() * rate < full);
        }
        let (level, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *level) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_waits() {
        let limiter = RateLimiter::new(60, 3);
        for _ in 0..3 {
            limiter.admit("alice").unwrap();
        }
        let wait = limiter.admit("alice").unwrap_err();
        assert_eq!(wait, 1, "one a second refills");
        limiter.admit("bob").unwrap();
    }
}
