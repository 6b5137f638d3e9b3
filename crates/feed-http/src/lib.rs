//! actix-web delivery for the feed service.
//!
//! It owns everything that is HTTP: the routes ([`configure`]), turning raw
//! path and query strings into domain types ([`parse`]), the wire error type
//! ([`ApiError`], always a JSON body), and the response encoding ([`encode_items`]),
//! which writes the item array by hand with `itoa` instead of going through
//! serde for every item.
//!
//! [`Guard`] is the middleware in front of every route: size limits, a
//! per-client rate limit ([`RateLimiter`]) and load shedding. [`Lifecycle`]
//! tells the health endpoints and the guard whether the server is loading,
//! serving or draining.
//!
//! The admin listener's app ([`admin_app`]) serves Prometheus metrics
//! ([`Metrics`], exposed through `prometheus-client`), live stats
//! ([`Snapshot`], taken by a [`Sampler`]) as JSON and Server-Sent Events, a
//! self-contained dashboard page, the OpenAPI document and a CPU profiler.
//!
//! It also holds [`LogRecorder`], the [`feed_domain::ErrorRecorder`] that
//! counts feed errors by kind and logs each with the user id.
//!
//! It knows the domain's types and ports, never a concrete adapter: the
//! binary chooses those.

mod admin;
mod encode;
mod error;
pub mod guard;
pub mod metrics;
pub mod parse;
mod rate;
mod recorder;
mod routes;
mod state;
mod stats;

pub use admin::{Admin, OPENAPI, admin_app};
pub use encode::{encode_items, encoded_len_hint, write_items};
pub use error::ApiError;
pub use guard::{Guard, GuardCounts, GuardLimits};
pub use metrics::{DataInfo, Exposition, Metrics};
pub use rate::RateLimiter;
pub use recorder::{FeedErrorCounts, LogRecorder};
pub use routes::{FeedSlot, app, configure};
pub use state::Lifecycle;
pub use stats::{Sampler, Snapshot};
