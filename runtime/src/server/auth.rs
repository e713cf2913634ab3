//! Bearer-token authentication: when the config sets `auth_token`, every RuntimeService call must
//! carry the metadata `authorization: Bearer <token>`. Health and reflection stay open so that
//! probes work without the secret.
use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::status::ServeError;

#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<[u8]>>,
}

impl BearerAuth {
    pub fn new(token: Option<&str>) -> Self {
        BearerAuth { token: token.map(|t| Arc::from(t.as_bytes())) }
    }
}

/// Compares without returning early, so the time taken does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else { return Ok(request) };
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            return Err(ServeError::Unauthenticated("missing `authorization: Bearer <token>` metadata".into()).into());
        };
        let given = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("");
        if constant_time_eq(given.trim().as_bytes(), expected) {
            Ok(request)
        } else {
            Err(ServeError::Unauthenticated("invalid bearer token".into()).into())
        }
    }
}
