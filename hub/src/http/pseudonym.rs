//! How the hub's log names a public caller: a keyed pseudonym of its
//! address that changes every day (UTC), never the address.
//!
//! The hub's log is read by every auditor, forever; an IP address in it is
//! personal data published for good. A pseudonym keeps what an auditor
//! needs (within one day, one address is one name, so a flood of queries
//! from one caller is still visible as such) and drops what nobody needs.
//! The day's key is random, lives only in memory and is replaced when the
//! day changes (or the hub restarts): once gone, not even the hub's
//! operator can map a pseudonym back to an address by trying the 2^32
//! IPv4 addresses, which a fixed key, or a plain hash, would allow. The
//! network prefix alone was the other choice; it names an organisation or
//! an ISP's customers outright and merges unrelated callers, so no.

use std::net::IpAddr;
use std::sync::Mutex;

use ring::hmac;

/// The day's key; replaced at the first request of a new day.
#[derive(Debug)]
pub(crate) struct Pseudonyms {
    day: Mutex<Option<(i64, Key)>>,
}

struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Default for Pseudonyms {
    fn default() -> Self {
        Pseudonyms { day: Mutex::new(None) }
    }
}

impl Pseudonyms {
    /// `public:<yyyy-mm-dd>:<12 hex digits>` for `addr` today.
    pub(crate) fn name(&self, addr: IpAddr) -> String {
        self.name_on(addr, time::OffsetDateTime::now_utc())
    }

    fn name_on(&self, addr: IpAddr, now: time::OffsetDateTime) -> String {
        let day = now.unix_timestamp().div_euclid(86_400);
        let mut held = self.day.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_none_or(|(d, _)| *d != day) {
            // The old key is dropped here: yesterday's names cannot be
            // recomputed by anyone from now on.
            *held = Some((day, Key(fresh_key())));
        }
        let Some((_, Key(key))) = held.as_ref() else { unreachable!("set above") };
        // An IPv4 caller reached over IPv6 is the same caller.
        let canonical = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let tag = hmac::sign(key, canonical.to_string().as_bytes());
        format!("public:{}:{}", now.date(), hex::encode(&tag.as_ref()[..6]))
    }
}

fn fresh_key() -> hmac::Key {
    let rng = ring::rand::SystemRandom::new();
    // The system random source failing is not something to log around.
    hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| panic!("the system random source failed"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_name_per_address_per_day_and_no_address_in_it() {
        let p = Pseudonyms::default();
        let day1 = time::macros::datetime!(2026-12-03 10:00 UTC);
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "203.0.113.8".parse().unwrap();
        let name = p.name_on(a, day1);
        assert!(name.starts_with("public:2026-12-03:") && !name.contains("203.0.113"), "{name}");
        assert_eq!(p.name_on(a, day1 + time::Duration::hours(13)), name);
        assert_eq!(p.name_on("::ffff:203.0.113.7".parse().unwrap(), day1), name);
        assert_ne!(p.name_on(b, day1), name);
        // The next day the same address has another name, and the old
        // name cannot be made again, even back on the first day.
        let next = p.name_on(a, day1 + time::Duration::days(1));
        assert_ne!(next, name);
        assert_ne!(next.rsplit(':').next(), name.rsplit(':').next());
        assert_ne!(p.name_on(a, day1), name);
        // Two hubs (or one restarted) name the same caller differently.
        assert_ne!(Pseudonyms::default().name_on(a, day1 + time::Duration::days(1)), next);
    }
}
