//! Rate limits: how many guesses one client may make in a minute. Each kind of attempt has a
//! bucket per key (a client address, or an enrolment code) holding a minute's allowance; an
//! attempt takes one, time refills them, and an attempt that finds its bucket empty is told
//! when the next one comes. Buckets live in this process (each `mam` counts its own clients).
//! No HTTP here: [`client`] reads an address from what the connection and a trusted proxy say.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LimitSettings;

/// What is being tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An office sign-in that failed, per client address.
    SignIn,
    /// An enrolment with a code that is not valid, per client address.
    Enrol,
    /// An enrolment naming one code.
    EnrolCode,
    /// A request with a read token, per client address.
    Read,
}

/// Buckets kept before the full ones are dropped: a full bucket is the same as none.
const PRUNE_AT: usize = 4096;

pub struct Limiter {
    per_minute: HashMap<Kind, u32>,
    buckets: Mutex<HashMap<(Kind, String), Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// An attempt refused: try again after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, at least one: what a `Retry-After` header carries.
    pub fn secs(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl Limiter {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            per_minute: HashMap::from([
                (Kind::SignIn, settings.sign_in_failures_per_minute),
                (Kind::Enrol, settings.enrol_failures_per_minute),
                (Kind::EnrolCode, settings.enrol_per_code_per_minute),
                (Kind::Read, settings.read_per_minute),
            ]),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one attempt from `key`'s bucket, or say when one will be there.
    pub fn take(&self, kind: Kind, key: &str) -> Result<(), RetryAfter> {
        self.take_at(kind, key, Instant::now())
    }

    /// Give back an attempt that turned out not to count (a sign-in that succeeded).
    pub fn give_back(&self, kind: Kind, key: &str) {
        let capacity = self.capacity(kind);
        if capacity == 0.0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = buckets.get_mut(&(kind, key.to_owned())) {
            b.tokens = (b.tokens + 1.0).min(capacity);
        }
    }

    fn capacity(&self, kind: Kind) -> f64 {
        f64::from(self.per_minute.get(&kind).copied().unwrap_or(0))
    }

    fn take_at(&self, kind: Kind, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let capacity = self.capacity(kind);
        if capacity == 0.0 {
            return Ok(());
        }
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|(k, _), b| {
                let cap = self.capacity(*k);
                b.tokens + now.duration_since(b.at).as_secs_f64() * cap / 60.0 < cap
            });
        }
        let bucket = buckets.entry((kind, key.to_owned())).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(RetryAfter(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / per_sec,
            )))
        }
    }
}

/// Who a request comes from: the connection's address, or when that is a trusted proxy, the
/// last address in `X-Forwarded-For` that is not one of the trusted proxies (what the proxy
/// nearest to us saw). IPv6 clients are counted by their /64, which one subscriber holds.
pub fn client(peer: Option<IpAddr>, forwarded_for: &[&str], trusted: &[IpAddr]) -> String {
    let mut addr = peer;
    if addr.is_some_and(|a| trusted.contains(&a)) {
        let hops = forwarded_for
            .iter()
            .flat_map(|h| h.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        if let Some(&first_untrusted) = hops.iter().rev().find(|a| !trusted.contains(a)) {
            addr = Some(first_untrusted);
        }
    }
    match addr {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Some(IpAddr::V4(v4)) => v4.to_string(),
        None => "unknown".to_owned(),
    }
}

/// The trusted proxies of the settings, each checked to be an address.
pub fn trusted_proxies(settings: &LimitSettings) -> anyhow::Result<Vec<IpAddr>> {
    settings
        .trusted_proxies
        .iter()
        .map(|a| {
            a.trim().parse::<IpAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "limits.trusted_proxies: {a:?} is not an IP address (e.g. 127.0.0.1)"
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32) -> Limiter {
        Limiter::new(&LimitSettings {
            sign_in_failures_per_minute: per_minute,
            enrol_failures_per_minute: 0,
            ..LimitSettings::default()
        })
    }

    #[test]
    fn a_minute_allowance_then_one_per_refill() {
        let l = limiter(6);
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(l.take_at(Kind::SignIn, "10.0.0.1", t0).is_ok());
        }
        let wait = l.take_at(Kind::SignIn, "10.0.0.1", t0).unwrap_err();
        assert_eq!(wait.secs(), 10, "six a minute: one every ten seconds");
        // Another client, and another kind, have their own buckets.
        assert!(l.take_at(Kind::SignIn, "10.0.0.2", t0).is_ok());
        assert!(l.take_at(Kind::Read, "10.0.0.1", t0).is_ok());
        assert!(l
            .take_at(Kind::SignIn, "10.0.0.1", t0 + Duration::from_secs(10))
            .is_ok());
        assert!(l
            .take_at(Kind::SignIn, "10.0.0.1", t0 + Duration::from_secs(11))
            .is_err());
        // A limit of 0 is no limit.
        for _ in 0..1000 {
            assert!(l.take_at(Kind::Enrol, "10.0.0.1", t0).is_ok());
        }
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let phone: IpAddr = "203.0.113.5".parse().unwrap();
        // Not trusted: the header is the client's own claim.
        assert_eq!(
            client(Some(phone), &["198.51.100.1"], &[proxy]),
            "203.0.113.5"
        );
        // Trusted: the last hop the proxy added; what the client wrote before it is ignored.
        assert_eq!(
            client(Some(proxy), &["198.51.100.1, 203.0.113.5"], &[proxy]),
            "203.0.113.5"
        );
        assert_eq!(client(Some(proxy), &[], &[proxy]), "10.0.0.9");
        let v6: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        assert_eq!(client(Some(v6), &[], &[]), "2001:db8:1:2::/64");
    }
}
