//! Providers as data: each preset's default host, its path per API, the wire protocol it
//! speaks and how it authenticates. Adding an OpenAI-compatible vendor is one row of
//! [`PRESETS`]. `target` turns a preset and an `override.endpoint` into where an instance's
//! requests go.

mod target;

pub(crate) use target::with_query;
pub use target::{target, Endpoint, Target};

/// The APIs a request can be forwarded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Chat,
    Embeddings,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// OpenAI legacy completions (`/v1/completions`).
    Completions,
    /// Anthropic Messages (`/v1/messages`).
    Messages,
}

/// How many APIs there are (the length of per-API tables).
pub const APIS: usize = 5;

impl ApiKind {
    pub const ALL: [ApiKind; APIS] = [
        ApiKind::Chat,
        ApiKind::Embeddings,
        ApiKind::Responses,
        ApiKind::Completions,
        ApiKind::Messages,
    ];

    /// The API in words, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            ApiKind::Chat => "chat completions",
            ApiKind::Embeddings => "embeddings",
            ApiKind::Responses => "responses",
            ApiKind::Completions => "completions",
            ApiKind::Messages => "messages",
        }
    }

    /// The API's name in the access log (`llm_api`).
    pub fn api(self) -> &'static str {
        match self {
            ApiKind::Chat => "chat",
            ApiKind::Embeddings => "embeddings",
            ApiKind::Responses => "responses",
            ApiKind::Completions => "completions",
            ApiKind::Messages => "messages",
        }
    }

    /// The path suffix that names the API (under any prefix).
    pub fn suffix(self) -> &'static str {
        match self {
            ApiKind::Chat => "/chat/completions",
            ApiKind::Embeddings => "/embeddings",
            ApiKind::Responses => "/responses",
            ApiKind::Completions => "/completions",
            ApiKind::Messages => "/messages",
        }
    }

    /// Streams can carry a usage event only when asked (`stream_options.include_usage`).
    pub fn asks_for_stream_usage(self) -> bool {
        matches!(self, ApiKind::Chat | ApiKind::Completions)
    }

    /// Whether the API streams at all.
    pub fn streams(self) -> bool {
        !matches!(self, ApiKind::Embeddings)
    }

    fn index(self) -> usize {
        match self {
            ApiKind::Chat => 0,
            ApiKind::Embeddings => 1,
            ApiKind::Responses => 2,
            ApiKind::Completions => 3,
            ApiKind::Messages => 4,
        }
    }
}

/// The wire protocol a provider speaks (see `crate::protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// One provider preset.
#[derive(Debug, PartialEq, Eq)]
pub struct Preset {
    /// The name in the configuration (APISIX's where APISIX has the provider).
    pub name: &'static str,
    /// Default host; empty when `override.endpoint` is required.
    pub host: &'static str,
    pub wire: Wire,
    /// Default path per API (indexed like [`ApiKind::ALL`]); `None`: not offered.
    paths: [Option<&'static str>; APIS],
    /// Paths that do not follow the endpoint's (Azure's Responses API lives at the
    /// resource's `/openai/v1/responses`, not under a deployment).
    fixed: [Option<&'static str>; APIS],
    /// How requests authenticate, in words (docs and errors).
    pub auth: &'static str,
    /// Headers every request carries unless `auth.header` sets them.
    pub headers: &'static [(&'static str, &'static str)],
}

const OPENAI_PATHS: [Option<&str>; APIS] = [
    Some("/v1/chat/completions"),
    Some("/v1/embeddings"),
    Some("/v1/responses"),
    Some("/v1/completions"),
    None,
];
const LOCAL_PATHS: [Option<&str>; APIS] = [
    Some("/v1/chat/completions"),
    Some("/v1/embeddings"),
    None,
    Some("/v1/completions"),
    None,
];
const BEARER: &str = "`Authorization: Bearer <key>`";
const NONE: [Option<&str>; APIS] = [None, None, None, None, None];

/// Every provider preset, checked against each provider's public documentation.
pub static PRESETS: &[Preset] = &[
    Preset {
        name: "openai",
        host: "api.openai.com",
        wire: Wire::OpenAi,
        paths: OPENAI_PATHS,
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "deepseek",
        host: "api.deepseek.com",
        wire: Wire::OpenAi,
        // Completions: DeepSeek's fill-in-the-middle API (beta).
        paths: [
            Some("/chat/completions"),
            None,
            None,
            Some("/beta/completions"),
            None,
        ],
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "openai-compatible",
        host: "",
        wire: Wire::OpenAi,
        paths: OPENAI_PATHS,
        fixed: NONE,
        auth: "as configured",
        headers: &[],
    },
    Preset {
        name: "azure-openai",
        host: "",
        wire: Wire::OpenAi,
        // The endpoint is a deployment URL (`.../openai/deployments/<d>/chat/completions
        // ?api-version=...`): chat and embeddings follow it.
        paths: [
            Some("/chat/completions"),
            Some("/embeddings"),
            None,
            None,
            None,
        ],
        fixed: [None, None, Some("/openai/v1/responses"), None, None],
        auth: "`api-key: <key>`",
        headers: &[],
    },
    Preset {
        name: "gemini",
        host: "generativelanguage.googleapis.com",
        wire: Wire::OpenAi,
        paths: [
            Some("/v1beta/openai/chat/completions"),
            Some("/v1beta/openai/embeddings"),
            None,
            None,
            None,
        ],
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "openrouter",
        host: "openrouter.ai",
        wire: Wire::OpenAi,
        paths: [
            Some("/api/v1/chat/completions"),
            None,
            None,
            Some("/api/v1/completions"),
            None,
        ],
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "aimlapi",
        host: "api.aimlapi.com",
        wire: Wire::OpenAi,
        paths: [
            Some("/v1/chat/completions"),
            Some("/v1/embeddings"),
            None,
            None,
            None,
        ],
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "mistral",
        host: "api.mistral.ai",
        wire: Wire::OpenAi,
        paths: [
            Some("/v1/chat/completions"),
            Some("/v1/embeddings"),
            None,
            None,
            None,
        ],
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "groq",
        host: "api.groq.com",
        wire: Wire::OpenAi,
        paths: [Some("/openai/v1/chat/completions"), None, None, None, None],
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "together",
        host: "api.together.xyz",
        wire: Wire::OpenAi,
        paths: [
            Some("/v1/chat/completions"),
            Some("/v1/embeddings"),
            None,
            Some("/v1/completions"),
            None,
        ],
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "fireworks",
        host: "api.fireworks.ai",
        wire: Wire::OpenAi,
        paths: [
            Some("/inference/v1/chat/completions"),
            Some("/inference/v1/embeddings"),
            None,
            Some("/inference/v1/completions"),
            None,
        ],
        fixed: NONE,
        auth: BEARER,
        headers: &[],
    },
    Preset {
        name: "ollama",
        host: "",
        wire: Wire::OpenAi,
        paths: LOCAL_PATHS,
        fixed: NONE,
        auth: "none needed",
        headers: &[],
    },
    Preset {
        name: "vllm",
        host: "",
        wire: Wire::OpenAi,
        paths: LOCAL_PATHS,
        fixed: NONE,
        auth: "none needed",
        headers: &[],
    },
    Preset {
        name: "anthropic",
        host: "api.anthropic.com",
        wire: Wire::Anthropic,
        paths: [None, None, None, None, Some("/v1/messages")],
        fixed: NONE,
        auth: "`x-api-key: <key>`",
        headers: &[("anthropic-version", ANTHROPIC_VERSION)],
    },
];

/// The `anthropic-version` sent unless `auth.header` sets one (the current, and so far
/// only, version of the Messages API).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A provider: one of the [`PRESETS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider(&'static Preset);

impl Provider {
    pub fn parse(name: &str) -> Option<Provider> {
        PRESETS.iter().find(|p| p.name == name).map(Provider)
    }

    /// Every preset's name, for error messages.
    pub fn names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.name).collect()
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn wire(self) -> Wire {
        self.0.wire
    }

    pub fn preset(self) -> &'static Preset {
        self.0
    }

    /// Headers every request to this provider carries unless `auth.header` sets them.
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        self.0.headers
    }

    /// Providers without a public default host need `override.endpoint`.
    pub fn needs_endpoint(self) -> bool {
        self.0.host.is_empty()
    }

    fn default_host(self) -> &'static str {
        self.0.host
    }

    /// Default path of an API; `None` where the provider does not offer it.
    fn default_path(self, kind: ApiKind) -> Option<&'static str> {
        self.0.paths.get(kind.index()).copied().flatten()
    }

    /// A path that ignores the endpoint's (see [`Preset`]).
    fn fixed_path(self, kind: ApiKind) -> Option<&'static str> {
        self.0.fixed.get(kind.index()).copied().flatten()
    }
}

#[cfg(test)]
mod tests;
