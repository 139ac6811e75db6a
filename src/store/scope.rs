//! The values that let code touch an end user's data.
//!
//! - `UserScope`: one end user (application, `sub`) and the agents their key reaches. Made only by
//!   verifying a secure user token (`auth::user_token`) or, for the admin plane's export and erase,
//!   from proof that the caller administers the application (`AppAccess`).
//! - `AgentScope`: a `UserScope` and one agent of its application that the scope covers. Made only
//!   by `AgentScope::check` (the extractor of every `/v1/agents/{agent_id}/…` route calls it).
//! - `MemoryOwner`: whom a new memory belongs to (an agent of the scope, or the user app-wide).
//! - `AppAccess`: proof that the caller administers one application (the admin plane's scope).
//!
//! Every store function on user data (`store::user_data`) takes one of them and builds its filter
//! from it; their fields are private, so no other code can make one up. Refusals are `ScopeError`s,
//! which `crate::error` maps to the contract's codes.

use std::sync::Arc;

use uuid::Uuid;

use super::webhooks::{EventSet, EventType};

use super::Db;
use super::StoreError;
use super::agents::{Agent, AgentCache};

/// Why a scope was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// The agent is not one of the caller's application.
    #[error("no such agent")]
    UnknownAgent,
    #[error("the token's key does not cover this agent")]
    AgentNotInScope,
    #[error("app-wide memory needs a key that covers all agents")]
    AppWideMemory,
    #[error("only an owner of the application may do this")]
    NotOwner,
    /// The `sub` named by an administrator is not one a token could carry.
    #[error("sub {0}")]
    InvalidSub(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, ScopeError>;

/// An application's id, as a scope or an access check proved it: where a bare UUID could be any
/// row's, this one can only be an application's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApplicationId(Uuid);

impl ApplicationId {
    /// A new application's id (the store makes it when it creates the application).
    pub(crate) fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Any id, for unit tests of statements (elsewhere they come from rows and access checks).
    #[cfg(test)]
    pub(crate) fn for_tests(id: Uuid) -> Self {
        Self(id)
    }

    pub fn uuid(self) -> Uuid {
        self.0
    }
}

impl std::fmt::Display for ApplicationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for ApplicationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Read from an application's own rows (agents, keys, providers): the row proves it.
impl super::Column for ApplicationId {
    fn from_sqlite(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Self> {
        Uuid::from_sqlite(row, index).map(Self)
    }
    fn from_postgres(row: &sqlx::postgres::PgRow, name: &str) -> sqlx::Result<Self> {
        Uuid::from_postgres(row, name).map(Self)
    }
}

impl From<ApplicationId> for sea_query::Value {
    fn from(id: ApplicationId) -> Self {
        id.0.into()
    }
}

/// The caller's standing in one application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Admin,
    /// An API key with the `admin` ACL: manages the application but not its membership.
    ApiKey,
    /// The server itself, carrying out the application's retention policy.
    Retention,
}

/// Proof that the caller may administer one application (made by `auth::extract::Principal`).
#[derive(Debug, Clone, Copy)]
pub struct AppAccess {
    app_id: ApplicationId,
    role: Role,
}

impl AppAccess {
    /// Made only once the caller's membership (or API key) has been checked.
    pub(crate) fn granted(app_id: Uuid, role: Role) -> Self {
        Self {
            app_id: ApplicationId(app_id),
            role,
        }
    }

    /// The server's own access to an application it has just read, to purge what its retention
    /// policy no longer keeps.
    pub(crate) fn for_retention(app_id: ApplicationId) -> Self {
        Self {
            app_id,
            role: Role::Retention,
        }
    }

    pub fn app_id(&self) -> ApplicationId {
        self.app_id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn require_owner(&self) -> Result<()> {
        match self.role {
            Role::Owner => Ok(()),
            _ => Err(ScopeError::NotOwner),
        }
    }
}

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
    application_id: ApplicationId,
    sub: Arc<str>,
    agents: AgentAccess,
    /// The application keeps message text and memory (`false`: privacy mode).
    stores_content: bool,
    /// The application's replies go on when their client leaves.
    resumable: bool,
    /// What the application's webhooks receive: the user's changes write these events.
    events: EventSet,
}

/// The longest accepted `sub`, in bytes.
pub const MAX_SUB_BYTES: usize = 256;

impl UserScope {
    /// Made by `auth::user_token` after the token's signature and claims are verified.
    pub(crate) fn from_verified_token(application_id: ApplicationId, sub: &str, agents: AgentAccess) -> Self {
        Self {
            application_id,
            sub: sub.into(),
            agents,
            stores_content: true,
            resumable: false,
            events: EventSet::default(),
        }
    }

    /// This scope under its application's privacy mode and reply policy, as the door read them
    /// for this request.
    pub(crate) fn with_policy(self, stores_content: bool, resumable: bool, events: EventSet) -> Self {
        Self {
            stores_content,
            resumable,
            events,
            ..self
        }
    }

    /// Whether the application's webhooks receive `event` (as the door read it).
    pub fn notifies(&self, event: EventType) -> bool {
        self.events.contains(event)
    }

    /// Whether the user's replies go on when their client leaves (`resumable` on the application).
    pub fn resumable(&self) -> bool {
        self.resumable
    }

    /// Whether the user's words may be stored: `false` in privacy mode (`retention.store_content`).
    pub fn stores_content(&self) -> bool {
        self.stores_content
    }

    /// An administrator's view of one user of their application (export, erase): all agents.
    pub fn for_administrator(access: &AppAccess, sub: &str) -> Result<Self> {
        validate_sub(sub).map_err(ScopeError::InvalidSub)?;
        Ok(Self {
            application_id: access.app_id(),
            sub: sub.into(),
            agents: AgentAccess::All,
            stores_content: true,
            resumable: false,
            events: EventSet::default(),
        })
    }

    /// The application's own servers, for counting the tokens of turns made with a completions
    /// API key (no end user): `sub` is empty, which no token can carry.
    pub(crate) fn stateless_turns(application_id: ApplicationId) -> Self {
        Self {
            application_id,
            sub: "".into(),
            agents: AgentAccess::All,
            stores_content: false,
            resumable: false,
            events: EventSet::default(),
        }
    }

    pub fn application_id(&self) -> ApplicationId {
        self.application_id
    }

    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The `sub`, shared (for keys of per-user maps without copying it).
    pub fn sub_shared(&self) -> &Arc<str> {
        &self.sub
    }

    pub fn agents(&self) -> &AgentAccess {
        &self.agents
    }

    pub fn covers_all_agents(&self) -> bool {
        self.agents == AgentAccess::All
    }

    /// Whether this scope may reach `agent_id`: `agent_not_in_scope` if not.
    pub fn require_agent(&self, agent_id: Uuid) -> Result<()> {
        if self.agents.covers(agent_id) {
            Ok(())
        } else {
            Err(ScopeError::AgentNotInScope)
        }
    }
}

/// One end user and one agent of their application that their key covers.
#[derive(Debug, Clone)]
pub struct AgentScope {
    user: UserScope,
    agent: Arc<Agent>,
}

impl AgentScope {
    /// The agent `agent_id` for this user: `not_found` unless it is an agent of the user's
    /// application, `agent_not_in_scope` unless the user's key covers it.
    pub async fn check(db: &Db, agents: &AgentCache, user: UserScope, agent_id: Uuid) -> Result<Self> {
        let agent = agents.get(db, user.application_id(), agent_id).await?;
        Self::of(user, agent)
    }

    /// The same check, on the agent already read (from the agent cache) for this request.
    pub fn of(user: UserScope, agent: Option<Arc<Agent>>) -> Result<Self> {
        let agent = agent
            .filter(|agent| agent.application_id == user.application_id())
            .ok_or(ScopeError::UnknownAgent)?;
        user.require_agent(agent.id)?;
        Ok(Self { user, agent })
    }

    pub fn user(&self) -> &UserScope {
        &self.user
    }

    /// A scope for an agent made up on the spot, for unit tests of statements.
    #[cfg(test)]
    pub(crate) fn for_tests(user: UserScope, agent_id: Uuid) -> Self {
        let agent = Agent {
            id: agent_id,
            application_id: user.application_id(),
            name: "test".into(),
            instructions: String::new(),
            model: super::Json(super::agents::AgentModel::echo()),
            memory: false,
            allowed_origins: super::Json(Vec::new()),
            tools: super::Json(Default::default()),
            created_at: 0,
            updated_at: 0,
        };
        Self {
            user,
            agent: Arc::new(agent),
        }
    }

    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    pub fn agent_id(&self) -> Uuid {
        self.agent.id
    }
}

/// Whom a new memory record belongs to.
#[derive(Debug, Clone)]
pub enum MemoryOwner {
    /// One agent's memory of the user.
    Agent(AgentScope),
    /// The user's, app-wide: only a key that covers all agents may write it.
    User(UserScope),
}

impl MemoryOwner {
    /// App-wide memory of this user: `agent_not_in_scope` unless the key covers all agents.
    pub fn app_wide(user: UserScope) -> Result<Self> {
        if !user.covers_all_agents() {
            return Err(ScopeError::AppWideMemory);
        }
        Ok(Self::User(user))
    }

    pub fn user(&self) -> &UserScope {
        match self {
            Self::Agent(scope) => scope.user(),
            Self::User(user) => user,
        }
    }

    pub fn agent_id(&self) -> Option<Uuid> {
        match self {
            Self::Agent(scope) => Some(scope.agent_id()),
            Self::User(_) => None,
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
