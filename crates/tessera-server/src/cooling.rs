//! Seats of grants checked in on a server of a pool of several, not yet
//! issued again. A check-in frees its seats early, before the grant's lease
//! ran out; the client still holds a holding proof for that grant, and a
//! proof of a freed copy must never hand a seat over (`crate::hand_over`).
//! So the seats stay counted here until the leader has acknowledged the
//! report that carries the check-in (then it knows, and refuses such a
//! claim), or until the copy would have lapsed anyway (then the claim's
//! expiry refuses it). Counted meanwhile as in use, in the reports too.

use std::collections::HashMap;

/// One checked-in grant's seats.
#[derive(Clone, Debug)]
struct Cooled {
    feature: String,
    seats: u32,
    /// When the copy would have lapsed, on this server's monotonic clock.
    until_ms: u64,
}

/// Seats cooling after a check-in, by grant and per feature.
#[derive(Debug, Default)]
pub struct Cooling {
    grants: HashMap<String, Cooled>,
    seats: HashMap<String, u32>,
}

impl Cooling {
    /// Keeps `seats` of `feature` counted until the check-in of `grant_id`
    /// is acknowledged, or until `until_ms`.
    pub fn cool(&mut self, grant_id: &str, feature: &str, seats: u32, until_ms: u64) {
        let cooled = Cooled {
            feature: feature.to_string(),
            seats,
            until_ms,
        };
        if let Some(before) = self.grants.insert(grant_id.to_string(), cooled) {
            self.uncount(&before);
        }
        *self.seats.entry(feature.to_string()).or_default() += seats;
    }

    /// Seats of `feature` cooling now.
    pub fn seats(&self, feature: &str) -> u32 {
        self.seats.get(feature).copied().unwrap_or(0)
    }

    /// Every feature's cooling seats.
    pub fn per_feature(&self) -> impl Iterator<Item = (&String, &u32)> {
        self.seats.iter()
    }

    /// The leader acknowledged the check-ins of `grant_ids`: their seats
    /// may be issued again. Whether any was cooling.
    pub fn acknowledged<'a>(&mut self, grant_ids: impl IntoIterator<Item = &'a str>) -> bool {
        let mut any = false;
        for grant_id in grant_ids {
            if let Some(cooled) = self.grants.remove(grant_id) {
                self.uncount(&cooled);
                any = true;
            }
        }
        any
    }

    /// Ends the cooling of every copy that would have lapsed by `now_ms`.
    /// Whether any ended.
    pub fn lapse(&mut self, now_ms: u64) -> bool {
        let ended: Vec<String> = self
            .grants
            .iter()
            .filter(|(_, cooled)| cooled.until_ms <= now_ms)
            .map(|(grant_id, _)| grant_id.clone())
            .collect();
        self.acknowledged(ended.iter().map(String::as_str))
    }

    fn uncount(&mut self, cooled: &Cooled) {
        if let Some(seats) = self.seats.get_mut(&cooled.feature) {
            *seats -= cooled.seats;
            if *seats == 0 {
                self.seats.remove(&cooled.feature);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_cool_until_acknowledged_or_lapsed() {
        let mut cooling = Cooling::default();
        cooling.cool("g1", "cad", 2, 1_000);
        cooling.cool("g2", "cad", 1, 5_000);
        cooling.cool("g3", "sim", 1, 5_000);
        assert_eq!(cooling.seats("cad"), 3);
        assert!(!cooling.acknowledged(["nope"]));
        assert!(cooling.acknowledged(["g2"]));
        assert_eq!(cooling.seats("cad"), 2);
        assert!(!cooling.lapse(999));
        assert!(cooling.lapse(1_000));
        assert_eq!(cooling.seats("cad"), 0);
        assert_eq!(cooling.seats("sim"), 1);
        // The same grant cooled twice counts once.
        cooling.cool("g3", "sim", 1, 6_000);
        assert_eq!(cooling.seats("sim"), 1);
        assert_eq!(cooling.per_feature().count(), 1);
    }
}
