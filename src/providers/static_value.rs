//! `static`: a fixed secret, such as an API key, injected as configured.

use std::time::Duration;

use async_trait::async_trait;

use super::{Grant, Provider, ProviderError};
use crate::config::StaticSettings;
use crate::secret::Secret;

/// A static value never expires; it is simply handed out again after this long.
const STATIC_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct StaticValue {
    value: Secret,
}

impl StaticValue {
    pub fn new(settings: &StaticSettings) -> Self {
        StaticValue {
            value: settings.value.clone(),
        }
    }
}

#[async_trait]
impl Provider for StaticValue {
    async fn login(&self) -> Result<Grant, ProviderError> {
        let mut grant = Grant::bare(self.value.clone());
        grant.expires_in = Some(STATIC_LIFETIME);
        Ok(grant)
    }
}
