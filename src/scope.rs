//! `UserScope`: the one value that lets code touch an end user's data.
//!
//! It is made only by verifying a secure user token (`auth::user_token`) or, for the admin plane's
//! export and erase, from proof that the caller administers the application (`AppAccess`). Every
//! store function on user data (`store::user_data`) takes it and applies its filter in one place.

use std::sync::Arc;

use uuid::Uuid;

use crate::auth::extract::AppAccess;
use crate::error::{Error, Result};

/// Which agents a scope reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAccess {
    /// Every agent of the application, and the user's app-wide memory.
    All,
    /// Only these agents (sorted); no app-wide memory.
    Only(Arc<[Uuid]>),
}

impl AgentAccess {
    pub fn covers(&self, agent_id: Uuid) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.binary_search(&agent_id).is_ok(),
        }
    }
}

/// One end user of one application, and the agents they may reach.
#[derive(Debug, Clone)]
pub struct UserScope {
    application_id: Uuid,
    sub: Arc<str>,
    agents: AgentAccess,
}

/// The longest accepted `sub`, in bytes.
pub const MAX_SUB_BYTES: usize = 256;

impl UserScope {
    /// Made by `auth::user_token` after the token's signature and claims are verified.
    pub(crate) fn from_verified_token(application_id: Uuid, sub: &str, agents: AgentAccess) -> Self {
        Self {
            application_id,
            sub: sub.into(),
            agents,
        }
    }

    /// An administrator's view of one user of their application (export, erase): all agents.
    pub fn for_administrator(access: &AppAccess, sub: &str) -> Result<Self> {
        validate_sub(sub).map_err(|problem| Error::invalid_field("sub", problem))?;
        Ok(Self {
            application_id: access.app_id,
            sub: sub.into(),
            agents: AgentAccess::All,
        })
    }

    pub fn application_id(&self) -> Uuid {
        self.application_id
    }

    pub fn sub(&self) -> &str {
        &self.sub
    }

    pub fn agents(&self) -> &AgentAccess {
        &self.agents
    }

    pub fn covers_all_agents(&self) -> bool {
        self.agents == AgentAccess::All
    }

    /// Whether this scope may reach `agent_id` (which the caller has checked is of this
    /// application): `agent_not_in_scope` if not.
    pub fn require_agent(&self, agent_id: Uuid) -> Result<()> {
        if self.agents.covers(agent_id) {
            Ok(())
        } else {
            Err(Error::AgentNotInScope(
                "the token's key does not cover this agent".into(),
            ))
        }
    }
}

/// A `sub` is a non-empty string of at most 256 bytes without control characters.
pub fn validate_sub(sub: &str) -> std::result::Result<(), &'static str> {
    if sub.is_empty() {
        return Err("must not be empty");
    }
    if sub.len() > MAX_SUB_BYTES {
        return Err("must be at most 256 bytes");
    }
    if sub.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}
