//! actix-web delivery for the feed service.
//!
//! It owns everything that is HTTP: the routes ([`configure`]), turning raw
//! path and query strings into domain types ([`parse`]), the wire error type
//! ([`ApiError`], always a JSON body), and the response encoding ([`encode_items`]),
//! which writes the item array by hand with `itoa` instead of going through
//! serde for every item.
//!
//! [`Route`] is the one table of the public routes. [`RequestGate`] is the
//! middleware in front of every route: size limits, a per-client rate limit
//! ([`RateLimiter`], the client found through [`TrustedProxies`] behind a
//! load balancer) and load shedding, request ids, counting into
//! [`Counters`] and error logging within a [`LogBudget`]. [`Lifecycle`]
//! tells the health endpoints and the gate whether the server is loading,
//! serving or draining.
//!
//! The admin listener's app ([`admin_app`]) serves Prometheus metrics
//! ([`Exposition`] of the [`Counters`], through `prometheus-client`), live
//! stats ([`Snapshot`], taken by a [`Sampler`]) as JSON and Server-Sent
//! Events, a self-contained dashboard page, the OpenAPI document and, when
//! built with the `profiler` feature, a CPU profiler; with an
//! [`AdminAccess`] token, only to requests that carry it. [`probe`] is the
//! other side of `/stats` for a command beside a running server: which data
//! it serves.
//!
//! It owns its sections of the configuration, `[admin]` ([`AdminSettings`])
//! and `[limits]` ([`LimitSettings`]): their serde types, the checks of
//! their keys ([`InvalidSetting`] names the key) and what they build; the
//! binary reads them from the file and the environment.
//!
//! It knows the domain's types and ports, never a concrete adapter: the
//! binary chooses those.

mod access;
mod admin;
mod client;
mod counters;
mod encode;
mod error;
mod exposition;
mod gate;
mod log_budget;
pub mod parse;
pub mod probe;
pub mod proxy;
mod rate;
mod route;
mod routes;
mod server;
mod serving;
mod settings;
mod state;
mod stats;

pub use access::{AdminAccess, AdminToken, BadAdminToken};
pub use admin::{Admin, OPENAPI, admin_app};
pub use client::{BadProxyRange, TrustedProxies};
pub use counters::{
    Counters, FeedErrorKind, LATENCY_BOUNDS, Refusal, SYNC_BOUNDS, SyncTotals, Totals,
};
pub use encode::{CHUNK, encode_items, encoded_len_hint, write_items};
pub use error::ApiError;
pub use exposition::Exposition;
pub use gate::{
    GateFuture, GateMiddleware, GateService, PARSER_HEAD_LIMIT, REQUEST_ID, RequestGate,
    RequestGateBuilder, RequestLimits,
};
pub use log_budget::LogBudget;
pub use rate::RateLimiter;
pub use route::Route;
pub use routes::{FeedSlot, app, configure};
pub use server::{Listeners, LoadFailure, Mode, ServerConfig, Stopped, Stops, bind, serve};
pub use serving::{DataBody, Serving, VersionBody};
pub use settings::{AdminSettings, LimitSettings};
pub use state::Lifecycle;
pub use stats::{Sampler, Snapshot, StorageBody};
