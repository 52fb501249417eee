//! What one node accepts of sockets: caps on the sockets open in all, per learner and per
//! client address (each socket holds a [`SocketPermit`] until it closes), and the `Origin`
//! check of an upgrade.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::SocketSettings;

/// The sockets open on this node, counted.
pub struct Sockets {
    pub settings: SocketSettings,
    /// Accept a token this many seconds after its expiry (the auth leeway), as the upgrade does.
    pub leeway_secs: u64,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_learner: HashMap<String, usize>,
    per_address: HashMap<IpAddr, usize>,
}

/// One socket counted; dropping it (the socket closed) gives its place back.
pub struct SocketPermit {
    sockets: Arc<Sockets>,
    learner: String,
    address: IpAddr,
}

impl Sockets {
    pub fn new(settings: SocketSettings, leeway_secs: u64) -> Self {
        Self {
            settings,
            leeway_secs,
            open: Mutex::new(Open::default()),
        }
    }

    /// Counts a socket of `learner` from `address`, or says which cap it would pass.
    pub fn admit(self: &Arc<Self>, learner: &str, address: IpAddr) -> Result<SocketPermit, String> {
        let s = &self.settings;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= s.max_connections {
            return Err(format!(
                "the server has {} sockets open, its limit; try again later",
                open.total
            ));
        }
        let learner_open = open.per_learner.get(learner).copied().unwrap_or(0);
        if learner_open >= s.max_connections_per_learner {
            return Err(format!(
                "learner {learner:?} has {learner_open} sockets open; the limit is {}: close one",
                s.max_connections_per_learner
            ));
        }
        let address_open = open.per_address.get(&address).copied().unwrap_or(0);
        if address_open >= s.max_connections_per_address {
            return Err(format!(
                "address {address} has {address_open} sockets open; the limit is {}",
                s.max_connections_per_address
            ));
        }
        open.total += 1;
        *open.per_learner.entry(learner.to_string()).or_default() += 1;
        *open.per_address.entry(address).or_default() += 1;
        Ok(SocketPermit {
            sockets: self.clone(),
            learner: learner.to_string(),
            address,
        })
    }

    /// Sockets open on this node now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        let mut open = self.sockets.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        decrement(&mut open.per_learner, &self.learner);
        decrement(&mut open.per_address, &self.address);
    }
}

fn decrement<K: std::hash::Hash + Eq + Clone>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Whether a page at `origin` may open a socket on `host`: always its own origin (the demo
/// pages Companion serves), and those in `allowed`. No `Origin` at all is not a browser (only
/// browsers send it, and only a browser can be made to connect by another site's page).
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&origin) {
        return true;
    }
    match (origin.split_once("://"), host) {
        (Some((scheme, origin_host)), Some(host)) => {
            matches!(scheme, "http" | "https") && origin_host == host.trim().to_ascii_lowercase()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(total: usize, per_learner: usize, per_address: usize) -> SocketSettings {
        SocketSettings {
            max_connections: total,
            max_connections_per_learner: per_learner,
            max_connections_per_address: per_address,
            idle_timeout: Duration::from_secs(60),
            ping_every: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(30),
            outbound_frames: 16,
            allowed_origins: Vec::new(),
        }
    }

    #[test]
    fn each_cap_refuses_past_its_limit_and_a_closed_socket_gives_its_place_back() {
        let sockets = Arc::new(Sockets::new(settings(3, 1, 2), 0));
        let home: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let ada = sockets.admit("ada", home).unwrap();
        let error = sockets.admit("ada", other).err().unwrap();
        assert!(
            error.contains("learner \"ada\" has 1 sockets open"),
            "{error}"
        );
        let _bob = sockets.admit("bob", home).unwrap();
        let error = sockets.admit("cy", home).err().unwrap();
        assert!(error.contains("address 10.0.0.1 has 2"), "{error}");
        let _cy = sockets.admit("cy", other).unwrap();
        let error = sockets.admit("dee", other).err().unwrap();
        assert!(error.contains("3 sockets open, its limit"), "{error}");
        drop(ada);
        assert_eq!(sockets.open(), 2);
        assert!(sockets.admit("ada", other).is_ok());
    }

    #[test]
    fn only_the_same_origin_and_the_allowed_ones_may_open_a_socket() {
        let allowed = vec!["https://school.example".to_string()];
        let host = Some("companion.example:8080");
        assert!(origin_allowed(None, host, &[]));
        assert!(origin_allowed(
            Some("http://companion.example:8080"),
            host,
            &[]
        ));
        assert!(origin_allowed(
            Some("https://Companion.example:8080/"),
            host,
            &[]
        ));
        assert!(!origin_allowed(Some("https://evil.example"), host, &[]));
        assert!(!origin_allowed(Some("null"), host, &[]));
        assert!(!origin_allowed(
            Some("https://companion.example:8080.evil"),
            host,
            &[]
        ));
        assert!(origin_allowed(
            Some("https://school.example"),
            host,
            &allowed
        ));
        assert!(!origin_allowed(
            Some("https://school.example.evil"),
            host,
            &allowed
        ));
    }
}
