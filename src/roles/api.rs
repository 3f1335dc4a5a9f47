//! `sensorfleet api`: REST, WebSocket, dashboard, `/metrics` and `/health/*` over the
//! shared stores. Several replicas can run behind one Service: they keep no state.
//! Acknowledge and clear travel to the processors over the event log's commands topic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http::HeaderName;
use sensorfleet_api::auth::jwt::{JwtConfig, JwtVerifier};
use sensorfleet_api::auth::keys::ApiKeys;
use sensorfleet_api::auth::{Authenticator, Role};
use sensorfleet_api::remote::RemoteControl;
use sensorfleet_api::{ApiState, GuardConfig, StatusProbe};
use sensorfleet_backends::{Cache, EventLog, Registry, TimeSeries};
use tokio::sync::watch;
use tracing::info;

use super::{BackendArgs, OpsArgs, Worker, supervise};

// The flags of `sensorfleet api` (its help text is the subcommand's doc in main.rs).
#[derive(clap::Args)]
#[command(mut_arg("metrics_addr", OpsArgs::default_at("127.0.0.1:9104")))]
pub struct ApiArgs {
    #[command(flatten)]
    pub backends: BackendArgs,
    /// Address of the API, dashboard, /metrics and /health.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SENSORFLEET_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// /metrics and the probes also answer here, without the API's credentials (for the
    /// kubelet and Prometheus).
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Who may use the API (shared by `sensorfleet api` and `sensorfleet up`).
#[derive(clap::Args, Clone, Default)]
pub struct AccessArgs {
    /// API keys as `name=role:key`, separated by commas or new lines; roles are viewer
    /// (reads, live feed, /metrics), operator (also acknowledge and clear) and admin.
    /// Any key or JWT setting turns auth on: every route then needs a credential but the
    /// dashboard's files, the OpenAPI document and the probes. Prefer the environment
    /// variable: a flag's value is visible to other users of the machine.
    #[arg(long, env = "SENSORFLEET_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// One bearer token with the admin role: the same as `--api-keys token=admin:<T>`.
    #[arg(long, env = "SENSORFLEET_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Shared secret of HS256 JWTs (at least 32 bytes).
    #[arg(long, env = "SENSORFLEET_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWKS URL of an OIDC provider (its `jwks_uri`): RS256 and ES256 JWTs it signs are
    /// accepted.
    #[arg(long, env = "SENSORFLEET_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// The `iss` every JWT must carry.
    #[arg(long, env = "SENSORFLEET_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// An `aud` every JWT must carry.
    #[arg(long, env = "SENSORFLEET_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The JWT claim that holds the role (a string or a list).
    #[arg(long, default_value = "role", env = "SENSORFLEET_JWT_ROLE_CLAIM")]
    pub jwt_role_claim: String,
    /// Origins besides the API's own whose pages may open the live feed (comma-separated,
    /// e.g. https://grafana.example.com).
    #[arg(long, env = "SENSORFLEET_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Header a trusted proxy sets to the client's address (e.g. x-forwarded-for);
    /// anonymous callers are then rate-limited by its last entry. Set it only behind a
    /// proxy that writes it: otherwise any client can pick its own address.
    #[arg(long, env = "SENSORFLEET_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// Requests per second per principal, or per client address for anonymous calls
    /// (0: unlimited).
    #[arg(long, default_value_t = 0.0, env = "SENSORFLEET_RATE_LIMIT")]
    pub rate_limit: f64,
}

impl AccessArgs {
    /// The guard these settings describe; the errors name the setting, never a secret.
    pub async fn guard(&self) -> anyhow::Result<GuardConfig> {
        let mut keys = match &self.api_keys {
            Some(text) => ApiKeys::parse(text)
                .map_err(|e| anyhow::anyhow!("--api-keys / SENSORFLEET_API_KEYS: {e}"))?,
            None => ApiKeys::default(),
        };
        if let Some(token) = &self.api_token {
            keys.add("token", Role::Admin, token)
                .map_err(|e| anyhow::anyhow!("--api-token / SENSORFLEET_API_TOKEN: {e}"))?;
        }
        let jwt = if self.jwt_secret.is_some() || self.jwt_jwks_url.is_some() {
            let config = JwtConfig {
                hs256_secret: self.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
                jwks_url: self.jwt_jwks_url.clone(),
                issuer: self.jwt_issuer.clone(),
                audience: self.jwt_audience.clone(),
                role_claim: self.jwt_role_claim.clone(),
            };
            Some(
                JwtVerifier::new(config)
                    .await
                    .map_err(|e| anyhow::anyhow!("JWT settings: {e}"))?,
            )
        } else {
            None
        };
        let client_ip_header = match &self.client_ip_header {
            Some(name) => Some(
                HeaderName::try_from(name.trim().to_ascii_lowercase())
                    .with_context(|| format!("--client-ip-header {name:?} is not a header name"))?,
            ),
            None => None,
        };
        Ok(GuardConfig {
            auth: Authenticator::new(keys, jwt),
            rate_per_second: self.rate_limit,
            allowed_origins: self.allowed_origins.clone(),
            client_ip_header,
        })
    }
}

/// What the API reads and where it sends commands.
#[derive(Clone)]
pub struct ApiBackends {
    /// Where acknowledge and clear go (the commands topic).
    pub log: Arc<dyn EventLog>,
    /// History.
    pub series: Arc<dyn TimeSeries>,
    /// Devices, rules, alert history.
    pub registry: Arc<dyn Registry>,
    /// Latest values, metrics, alerts, live feed.
    pub cache: Arc<dyn Cache>,
}

/// Binds `--http-addr` (and `ops_addr`, when given, for `/metrics` and the probes alone)
/// and starts serving; returns the bound address (port 0 picks one). `probe` adds
/// entries to `/health/services`.
pub async fn spawn(
    args: &ApiArgs,
    backends: ApiBackends,
    probe: Option<StatusProbe>,
    ops_addr: Option<SocketAddr>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, Worker)> {
    let listener = sensorfleet_api::bind(args.http_addr).await?;
    let ops = match ops_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen for /metrics and the probes on {addr}; is another instance running? pass --metrics-addr with a free port"
            )
        })?),
        None => None,
    };
    let bound = listener.local_addr()?;
    info!(
        api = %format!("http://{bound}/"),
        time_series = backends.series.name(),
        registry = backends.registry.name(),
        cache = backends.cache.name(),
        "API serving"
    );
    let mut state = ApiState::new(
        backends.series,
        backends.registry.clone(),
        backends.cache,
        args.access.guard().await?,
    );
    state.control = Some(Arc::new(RemoteControl {
        log: backends.log,
        registry: backends.registry,
        wait: Duration::from_secs(5),
    }));
    if let Some(probe) = probe {
        state.probe = probe;
    }
    if state.guard.auth_is_on() {
        info!(
            "API auth is on: every route but the dashboard's files, the OpenAPI document and the probes needs a credential"
        );
    }
    let ops = ops.map(|listener| {
        info!(metrics = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics and probes serving");
        tokio::spawn(sensorfleet_api::serve_app(
            listener,
            sensorfleet_api::ops_router(state.clone()),
            shutdown.clone(),
        ))
    });
    let worker = tokio::spawn(async move {
        let served = sensorfleet_api::serve(listener, state, shutdown).await;
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        served.context("the API stopped")
    });
    Ok((bound, worker))
}

/// Serves until `stop` resolves.
pub async fn run(args: ApiArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let b = &args.backends;
    let connector = b.connector("sensorfleet api")?;
    let backends = ApiBackends {
        log: b.open("event log", || connector.event_log(0)).await?,
        series: b.open("time series", || connector.time_series()).await?,
        registry: b.open("registry", || connector.registry(8)).await?,
        cache: b.open("cache", || connector.cache()).await?,
    };
    let (stopping, stopped) = watch::channel(false);
    let (_, worker) = spawn(&args, backends, None, Some(args.ops.metrics_addr), stopped).await?;
    supervise("API", worker, &stopping, stop).await
}
