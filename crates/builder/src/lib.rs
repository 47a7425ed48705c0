//! `soci-index-builder`: a small service that a registry notifies on every push (CNCF
//! distribution's `notifications.endpoints`), which builds and publishes a SOCI index for each
//! image pushed — AWS's "SOCI index builder" without a cloud.
//!
//! The pieces: [`config`] (the TOML file), [`filters`] (the cheap intake decisions on an event),
//! [`queue`] (the persistent job queue in redb, deduplicated by image), [`worker`] (jobs running
//! [`indexer::index_image`] with retries), [`service`] (the HTTP endpoints), [`metrics`]
//! (Prometheus), [`backfill`] (queue what a registry already holds) and [`api`] (the small
//! client `status` and `backfill` use to talk to a running service); [`error`] has the typed
//! errors.

pub mod api;
pub mod backfill;
pub mod config;
pub mod error;
pub mod filters;
pub mod metrics;
pub mod queue;
pub mod service;
pub mod worker;

pub use error::{Error, Result};
