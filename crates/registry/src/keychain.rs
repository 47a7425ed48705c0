//! Credentials handed to a running process for one repository (the auth of a Kubernetes CRI
//! `PullImage`: the kubelet's image pull secret), kept in memory only and scoped to the
//! registry and repository they came with.

use crate::credentials::Credential;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// A shared, in-memory store of credentials by `(registry, repository)`. Clones share it.
/// The registry client consults it (see [`crate::ClientConfig::keychain`]) for requests to a
/// repository's own registry, never for its mirrors.
#[derive(Clone, Default)]
pub struct Keychain {
    entries: Arc<RwLock<HashMap<(String, String), Credential>>>,
}

/// One remembered credential, as passed between processes. Its `Debug` shows no secret:
/// [`Credential`]'s redacts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeychainEntry {
    /// Registry host as in the image reference (`registry.example.com:5000`, `docker.io`).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// The credential; never printed.
    pub credential: Credential,
}

impl Keychain {
    /// An empty keychain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers `entry`, replacing what was kept for its repository; returns whether
    /// anything changed (a pull with the same secret again changes nothing).
    pub fn remember(&self, entry: KeychainEntry) -> bool {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let key = (entry.registry, entry.repository);
        if map.get(&key) == Some(&entry.credential) {
            return false;
        }
        map.insert(key, entry.credential);
        true
    }

    /// Puts back what [`Keychain::get`] returned before a change (`None`: nothing kept):
    /// undoes a [`Keychain::remember`] whose credentials turned out wrong.
    pub fn restore(&self, registry: &str, repository: &str, previous: Option<Credential>) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let key = (registry.to_owned(), repository.to_owned());
        match previous {
            Some(c) => map.insert(key, c),
            None => map.remove(&key),
        };
    }

    /// The credential kept for `registry`/`repository`, if any.
    pub fn get(&self, registry: &str, repository: &str) -> Option<Credential> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        map.get(&(registry.to_owned(), repository.to_owned()))
            .cloned()
    }

    /// The entry kept for `registry`/`repository`, if any (to hand to another process).
    pub fn entry(&self, registry: &str, repository: &str) -> Option<KeychainEntry> {
        self.get(registry, repository)
            .map(|credential| KeychainEntry {
                registry: registry.to_owned(),
                repository: repository.to_owned(),
                credential,
            })
    }

    /// Every entry (to hand to another process).
    pub fn entries(&self) -> Vec<KeychainEntry> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|((registry, repository), credential)| KeychainEntry {
                registry: registry.clone(),
                repository: repository.clone(),
                credential: credential.clone(),
            })
            .collect()
    }

    /// How many repositories have credentials.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no repository has credentials.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Keychain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names the repositories only: the credentials stay out of every log.
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        f.debug_set()
            .entries(map.keys().map(|(r, p)| format!("{r}/{p}")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(repo: &str, password: &str) -> KeychainEntry {
        KeychainEntry {
            registry: "reg.example:5000".into(),
            repository: repo.into(),
            credential: Credential::Basic {
                username: "u".into(),
                password: password.into(),
            },
        }
    }

    #[test]
    fn scoped_to_registry_and_repository_and_replaced_by_a_newer_pull() {
        let k = Keychain::new();
        assert!(k.remember(entry("team/app", "one")));
        assert!(!k.remember(entry("team/app", "one")), "same secret again");
        assert!(k.get("reg.example:5000", "team/other").is_none());
        assert!(k.get("other.example", "team/app").is_none());
        assert!(k.remember(entry("team/app", "two")));
        assert_eq!(k.entries(), vec![entry("team/app", "two")]);
        assert_eq!(k.len(), 1);
        k.restore(
            "reg.example:5000",
            "team/app",
            Some(entry("team/app", "one").credential),
        );
        assert_eq!(k.entries(), vec![entry("team/app", "one")]);
        k.restore("reg.example:5000", "team/app", None);
        assert!(k.is_empty());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let k = Keychain::new();
        k.remember(entry("team/app", "s3cret-pw"));
        let text = format!("{k:?} {:?}", k.entries());
        assert!(text.contains("team/app"), "{text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
    }

    #[test]
    fn entries_survive_serialization() {
        let e = entry("team/app", "pw");
        let json = serde_json::to_string(&e).unwrap();
        let back: KeychainEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
