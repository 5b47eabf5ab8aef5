//! Nonce-count replay protection (RFC 7616 §3.4, RFC 2617 §3.2.2): a client reusing a nonce
//! must send a higher `nc` each time, and the server rejects a count it has already seen.
//!
//! A stateless nonce (see [`super::nonce`]) proves who it was issued to, but not that a request
//! carrying it is new: a captured `Authorization` could be sent again, unchanged, for as long as
//! the nonce lives (Kamailio's default accepts that for 300 s). So each shard remembers, for each
//! nonce that has authenticated a request, the highest `nc` seen, and refuses any count not above
//! it.
//!
//! The table is bounded. Entries for expired nonces are dropped first (such a nonce is stale
//! anyway, so a replay of it cannot succeed). When the table is full of live nonces the oldest
//! entry is evicted, and from then on any nonce issued no later than an evicted one that the table
//! does not know is answered [`NcVerdict::Forgotten`]: treated as stale, so the client fetches a
//! fresh nonce instead of being able to replay a count the table no longer remembers. Overload
//! costs legitimate clients one extra round trip, never a replay window.
//!
//! Dropped expired entries count as forgotten too. The nonce's age is measured on the wall clock,
//! which can step back (an NTP correction): a dropped nonce would then be within its lifetime
//! again, with no count remembered, and a captured request replayed. While the clock runs forward
//! this costs nothing: nonces issued that long ago are stale before the table is consulted.
//!
//! The table is per shard: a nonce used on two shards (a client whose TCP connections land on
//! different cores) is tracked twice. A replay that reaches another shard must still come from
//! the address the nonce was issued to.

use super::bounded::BoundedMap;
use super::nonce::NonceId;

/// What [`NonceCounts::observe`] decided about a nonce-count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcVerdict {
    /// Higher than any count seen for this nonce: accept (and it is now remembered).
    Fresh,
    /// Not higher than a count already seen: a replay (or a client out of step).
    Replayed,
    /// The table evicted nonces at least this old under pressure and does not know this one:
    /// the client must get a fresh nonce (answer as stale).
    Forgotten,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    highest_nc: u32,
    issued_at_s: u64,
}

/// The highest nonce-count seen per nonce, for one shard.
#[derive(Debug)]
pub struct NonceCounts {
    table: BoundedMap<NonceId, Seen>,
    /// Nonces issued at or before this time that the table does not hold may have been evicted.
    forgotten_up_to_s: Option<u64>,
}

impl NonceCounts {
    pub fn new(capacity: usize) -> NonceCounts {
        NonceCounts {
            table: BoundedMap::new(capacity),
            forgotten_up_to_s: None,
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Records `nc` for the nonce `id` (issued at `issued_at_s`) if it is higher than any seen.
    /// Call only once the request's `response` has been verified, so that only authenticated
    /// requests take room in the table. `lifetime_s` is the nonce lifetime: entries older are
    /// dropped first when room is needed.
    pub fn observe(
        &mut self,
        id: &NonceId,
        issued_at_s: u64,
        nc: u32,
        now_unix_s: u64,
        lifetime_s: u64,
    ) -> NcVerdict {
        if let Some(seen) = self.table.get_mut(id) {
            if nc <= seen.highest_nc {
                return NcVerdict::Replayed;
            }
            seen.highest_nc = nc;
            return NcVerdict::Fresh;
        }
        if self
            .forgotten_up_to_s
            .is_some_and(|limit| issued_at_s <= limit)
        {
            return NcVerdict::Forgotten;
        }
        if self.table.len() >= self.table.capacity() {
            self.make_room(now_unix_s, lifetime_s);
        }
        if let Some((_, evicted)) = self.table.insert(
            *id,
            Seen {
                highest_nc: nc,
                issued_at_s,
            },
        ) {
            self.forget(evicted.issued_at_s);
        }
        NcVerdict::Fresh
    }

    /// Drops expired entries from the front; if none was expired, evicts the oldest live one.
    /// Either way what is dropped counts as forgotten (see the module documentation).
    fn make_room(&mut self, now_unix_s: u64, lifetime_s: u64) {
        let mut freed = false;
        while let Some((_, seen)) = self.table.oldest() {
            let issued_at_s = seen.issued_at_s;
            if now_unix_s.saturating_sub(issued_at_s) <= lifetime_s {
                break;
            }
            self.table.pop_oldest();
            self.forget(issued_at_s);
            freed = true;
        }
        if !freed {
            if let Some((_, evicted)) = self.table.pop_oldest() {
                self.forget(evicted.issued_at_s);
            }
        }
    }

    fn forget(&mut self, issued_at_s: u64) {
        self.forgotten_up_to_s = Some(
            self.forgotten_up_to_s
                .map_or(issued_at_s, |limit| limit.max(issued_at_s)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn id(n: u8) -> NonceId {
        [n; 32]
    }

    #[test]
    fn counts_must_increase() {
        let mut counts = NonceCounts::new(8);
        assert_eq!(counts.observe(&id(1), T0, 1, T0, 300), NcVerdict::Fresh);
        assert_eq!(counts.observe(&id(1), T0, 1, T0, 300), NcVerdict::Replayed);
        assert_eq!(counts.observe(&id(1), T0, 3, T0, 300), NcVerdict::Fresh);
        assert_eq!(counts.observe(&id(1), T0, 2, T0, 300), NcVerdict::Replayed);
        // Another nonce has its own sequence.
        assert_eq!(counts.observe(&id(2), T0, 1, T0, 300), NcVerdict::Fresh);
    }

    #[test]
    fn expired_entries_make_room_and_stay_refused_if_the_clock_steps_back() {
        let mut counts = NonceCounts::new(2);
        counts.observe(&id(1), T0, 1, T0, 300);
        counts.observe(&id(2), T0, 1, T0, 300);
        // At T0 + 301 both are expired: both go, and no live entry is evicted.
        assert_eq!(
            counts.observe(&id(3), T0 + 301, 1, T0 + 301, 300),
            NcVerdict::Fresh
        );
        assert_eq!(counts.len(), 1);
        assert_eq!(counts.forgotten_up_to_s, Some(T0));
        // The `digest` fuzz target's replay check (engine/fuzz) failed on this with a written
        // history: the wall clock steps back 2 s, so the nonce of id 1 is within its lifetime
        // again. Its count was dropped with the entry, so the same count must not be accepted
        // as new: the client is sent for a fresh nonce.
        assert_eq!(
            counts.observe(&id(1), T0, 1, T0 + 299, 300),
            NcVerdict::Forgotten
        );
        // The live one is tracked as before.
        assert_eq!(
            counts.observe(&id(3), T0 + 301, 1, T0 + 302, 300),
            NcVerdict::Replayed
        );
    }

    #[test]
    fn evicting_live_entries_forgets_older_nonces_instead_of_allowing_replay() {
        let mut counts = NonceCounts::new(2);
        counts.observe(&id(1), T0, 1, T0, 300);
        counts.observe(&id(2), T0 + 1, 1, T0 + 1, 300);
        // Full of live nonces: the oldest (issued at T0) is evicted.
        assert_eq!(
            counts.observe(&id(3), T0 + 2, 1, T0 + 2, 300),
            NcVerdict::Fresh
        );
        assert_eq!(counts.len(), 2);
        // Its replay is not accepted: the table cannot tell, so it asks for a new nonce.
        assert_eq!(
            counts.observe(&id(1), T0, 1, T0 + 3, 300),
            NcVerdict::Forgotten
        );
        // Nonces issued after the evicted one are tracked as usual.
        assert_eq!(
            counts.observe(&id(2), T0 + 1, 1, T0 + 3, 300),
            NcVerdict::Replayed
        );
        assert_eq!(
            counts.observe(&id(2), T0 + 1, 2, T0 + 3, 300),
            NcVerdict::Fresh
        );
    }
}
