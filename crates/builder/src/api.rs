//! A client of a running builder service (`GET /jobs`, `POST /jobs`), for `status` and
//! `backfill`: they prefer the service, since only one process may open the queue database.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::queue::{Job, JobState};
use crate::service::{AddJob, AddJobAnswer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Talks to the service a configuration describes.
pub struct ServiceClient {
    base: String,
    header: String,
    value: String,
    http: reqwest::Client,
}

impl ServiceClient {
    /// The service at the configured `listen` address (a wildcard address is reached on
    /// loopback), authenticated with the configured secret.
    pub fn from_config(config: &Config) -> Result<ServiceClient> {
        let mut addr: SocketAddr = config.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let base = format!("http://{addr}");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Service {
                url: base.clone(),
                reason: registry::error_chain(&e),
            })?;
        Ok(ServiceClient {
            base,
            header: config.secret_header.clone(),
            value: config.expected_secret_value(),
            http,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn err(&self, path: &str, reason: String) -> Error {
        Error::Service {
            url: format!("{}{path}", self.base),
            reason,
        }
    }

    /// Whether a service answers `GET /healthz` at all (any status).
    pub async fn is_up(&self) -> bool {
        self.http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .is_ok()
    }

    /// Recent jobs; `Ok(None)` when no service answers (connection refused).
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Option<Vec<Job>>> {
        let mut url = format!("{}/jobs?limit={limit}", self.base);
        if let Some(s) = state {
            url.push_str("&state=");
            url.push_str(s.as_str());
        }
        let resp = match self
            .http
            .get(&url)
            .header(self.header.as_str(), self.value.as_str())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Ok(None),
            Err(e) => return Err(self.err("/jobs", registry::error_chain(&e))),
        };
        self.answer(resp, "a job list").await.map(Some)
    }

    /// Queues a job through the service.
    pub async fn add_job(&self, job: &AddJob) -> Result<AddJobAnswer> {
        let resp = self
            .http
            .post(format!("{}/jobs", self.base))
            .header(self.header.as_str(), self.value.as_str())
            .json(job)
            .send()
            .await
            .map_err(|e| self.err("/jobs", registry::error_chain(&e)))?;
        self.answer(resp, "an answer to a queued job").await
    }

    /// Reads a `/jobs` answer: the service's message on a non-2xx status, else the JSON of
    /// `what` it should be.
    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        what: &str,
    ) -> Result<T> {
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.err("/jobs", registry::error_chain(&e)))?;
        if !status.is_success() {
            return Err(self.err(
                "/jobs",
                format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| self.err("/jobs", format!("the answer is not {what}: {e}")))
    }
}
