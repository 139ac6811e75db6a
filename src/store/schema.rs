//! Table and column names, so queries are checked by the compiler rather than spelled in strings.

use sea_query::Iden;

#[derive(Iden, Clone, Copy)]
pub enum Operators {
    Table,
    Id,
    Email,
    PasswordHash,
    CreatedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum OperatorSessions {
    Table,
    Id,
    OperatorId,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum RefreshTokens {
    Table,
    TokenHash,
    SessionId,
    CreatedAt,
    SpentAt,
}

#[derive(Iden, Clone, Copy)]
pub enum Applications {
    Table,
    Id,
    Name,
    AllowedOrigins,
    Limits,
    Retention,
    Resumable,
    WebhookEvents,
    CreatedAt,
    UpdatedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum Memberships {
    Table,
    ApplicationId,
    OperatorId,
    Role,
    CreatedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum Providers {
    Table,
    Id,
    ApplicationId,
    Name,
    Kind,
    BaseUrl,
    ApiKeyEncrypted,
    CreatedAt,
    UpdatedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum Agents {
    Table,
    Id,
    ApplicationId,
    Name,
    Instructions,
    Model,
    Memory,
    AllowedOrigins,
    Tools,
    CreatedAt,
    UpdatedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum AuthenticationKeys {
    Table,
    Id,
    ApplicationId,
    Name,
    AgentIds,
    SecretEncrypted,
    MasterKeyVersion,
    CreatedAt,
    LastUsedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum ApiKeys {
    Table,
    Id,
    ApplicationId,
    Name,
    Acl,
    AgentIds,
    Prefix,
    KeyHash,
    CreatedAt,
    LastUsedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum Webhooks {
    Table,
    Id,
    ApplicationId,
    Url,
    Events,
    SecretEncrypted,
    CreatedAt,
}

#[derive(Iden, Clone, Copy)]
pub enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    ApplicationId,
    EventType,
    Payload,
    Status,
    Attempts,
    LastStatus,
    LastError,
    NextAttemptAt,
    CreatedAt,
    DeliveredAt,
}
