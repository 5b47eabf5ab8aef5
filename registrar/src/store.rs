//! The bindings one shard owns, and the RFC 3261 §10.3 step 7 rules that change them.
//!
//! Each shard owns a [`BindingStore`] for the AORs that hash to it ([`crate::owner_shard`]); no
//! other thread touches it, so there are no locks. The store is sans-IO: every call takes `now`,
//! and the shard asks [`BindingStore::next_expiry`] when to call [`BindingStore::expire`], so a
//! binding disappears on time rather than when someone next reads it (a registration event
//! subscriber or the Redis copy must hear of it then).
//!
//! Layout: AOR → slot of a slab of records; each record holds the AOR's bindings (at most
//! `max_contacts_per_aor`, kept sorted by q then recency, so lookup is a filter); an ordered set
//! of `(expires_at, id, slot)` indexes every binding by expiry, so expiring costs O(log n) per
//! binding and never scans. Invariants (checked by the property tests): every binding has exactly
//! one index entry with its `expires_at`; no record is empty; `len` is the number of bindings.

use std::collections::{BTreeSet, HashMap};

use ahash::RandomState;
use std::fmt;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use crate::binding::{Binding, BindingId};
use crate::config::MAX_EXPIRES_LIMIT_S;
use crate::redis_data::StoredBinding;
use crate::{Aor, RegisterError, RegisterRequest, RegistrarConfig};

/// The bindings of the AORs one shard owns.
#[derive(Debug, Clone)]
pub struct BindingStore {
    config: RegistrarConfig,
    /// Sized for `max_aors_per_shard` at creation, so it never rehashes while serving.
    slots: HashMap<Aor, u32, RandomState>,
    records: Vec<Option<Record>>,
    free_slots: Vec<u32>,
    by_expiry: BTreeSet<(Instant, BindingId, u32)>,
    next_id: u64,
    next_update_seq: u64,
    len: usize,
}

#[derive(Debug, Clone)]
struct Record {
    aor: Aor,
    /// Sorted by q descending, then most recently updated first.
    bindings: Vec<Binding>,
}

/// What a REGISTER did, and what the 200 OK says (§10.3 step 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    pub aor: Aor,
    /// Every binding of the AOR after the request, in lookup order, one `Contact` each.
    pub contacts: Vec<ContactEcho>,
    /// The Path to echo: the request's, when it listed `path` in Supported; else empty (RFC 3327
    /// §5.3).
    pub path: Vec<Box<str>>,
    /// Answer with `Require: outbound`: the UA supports it and a binding uses it (RFC 5626 §6).
    pub require_outbound: bool,
    /// Bindings created.
    pub added: usize,
    /// Existing bindings updated (new interval, and whatever else the contact changed).
    pub refreshed: usize,
    /// Bindings removed by interval 0, `*`, or replaced by another binding of the same device.
    pub removed: usize,
    /// Least recently updated bindings dropped to stay within `max_contacts_per_aor`.
    pub evicted: usize,
}

/// One `Contact` line of a 200 OK to REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEcho {
    /// The registered Contact value without `expires`.
    pub value: Box<str>,
    /// Seconds left.
    pub expires_s: u32,
}

impl ContactEcho {
    /// The echo of a binding as the database returned it (for a 200 OK answered from Redis).
    pub fn of_stored(binding: &StoredBinding, now: Instant) -> ContactEcho {
        let left_s = binding.expires_at.saturating_duration_since(now).as_secs();
        ContactEcho {
            value: binding.echo_value.clone(),
            expires_s: u32::try_from(left_s).unwrap_or(u32::MAX).max(1),
        }
    }
}

impl fmt::Display for ContactEcho {
    /// The header value: `<uri>;params;expires=N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};expires={}", self.value, self.expires_s)
    }
}

impl BindingStore {
    /// An empty store applying `config` (validated by the caller, [`RegistrarConfig::validate`]).
    pub fn new(config: RegistrarConfig) -> BindingStore {
        let max_aors = config.max_aors_per_shard;
        BindingStore {
            config,
            slots: HashMap::with_capacity_and_hasher(max_aors, RandomState::new()),
            records: Vec::new(),
            free_slots: Vec::new(),
            by_expiry: BTreeSet::new(),
            next_id: 0,
            next_update_seq: 0,
            len: 0,
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// Bindings held, including any whose time is up but that [`BindingStore::expire`] has not
    /// removed yet.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// AORs with at least one binding held.
    pub fn aor_count(&self) -> usize {
        self.slots.len()
    }

    /// Applies a REGISTER (RFC 3261 §10.3 steps 6–8) at `now`.
    ///
    /// All checks run before any change, so a failed request changes nothing:
    /// - every contact's interval: its `expires`, else the Expires header, else the default;
    ///   nonzero below the minimum → 423; above the maximum → shortened;
    /// - every binding the request touches: same Call-ID with a CSeq not above the stored one →
    ///   400 "Invalid CSeq number"; another Call-ID is a new client session and updates it.
    ///
    /// Then, contact by contact in order, a contact matching bindings ([`Binding::matches`]) with
    /// interval 0 removes them; with a nonzero interval it updates the first and removes the
    /// others (one device, one binding); a contact matching nothing is added. `*` removes every
    /// binding. Finally, bindings beyond `max_contacts_per_aor` are evicted, least recently
    /// updated first (Flexisip). A request without Contact only lists the bindings.
    pub fn register(
        &mut self,
        req: RegisterRequest,
        now: Instant,
    ) -> Result<RegisterOutcome, RegisterError> {
        let slot = self.slots.get(&req.aor).copied();
        let granted_s = self.check(&req, slot, now)?;

        let mut outcome = RegisterOutcome {
            aor: req.aor.clone(),
            contacts: Vec::new(),
            path: if req.path_supported {
                req.path.clone()
            } else {
                Vec::new()
            },
            require_outbound: false,
            added: 0,
            refreshed: 0,
            removed: 0,
            evicted: 0,
        };
        if req.is_fetch() {
            if let Some(record) = slot.and_then(|s| self.record(s)) {
                outcome.contacts = echoes(&record.bindings, now);
                outcome.require_outbound = req.outbound_supported
                    && record
                        .bindings
                        .iter()
                        .any(|b| b.is_live(now) && b.reg_id.is_some());
            }
            return Ok(outcome);
        }
        let nothing_to_add = granted_s.iter().all(|&s| s == 0);
        if slot.is_none() && nothing_to_add {
            // Removing what does not exist: nothing to do.
            return Ok(outcome);
        }

        let slot = match slot {
            Some(s) => s,
            None if self.slots.len() >= self.config.max_aors_per_shard => {
                return Err(RegisterError::StoreFull);
            }
            None => self.allocate(req.aor.clone()),
        };
        let mut bindings = match self.record_mut(slot) {
            Some(record) => std::mem::take(&mut record.bindings),
            None => Vec::new(),
        };

        // Bindings whose time is up but that expire() has not reached are gone already.
        let before = bindings.len();
        bindings.retain(|b| {
            let live = b.is_live(now);
            if !live {
                self.by_expiry.remove(&(b.expires_at, b.id, slot));
            }
            live
        });
        self.len -= before - bindings.len();

        if req.star {
            for b in bindings.drain(..) {
                self.by_expiry.remove(&(b.expires_at, b.id, slot));
                outcome.removed += 1;
            }
            self.len -= outcome.removed;
        }

        for (contact, &expires_s) in req.contacts.iter().zip(&granted_s) {
            let matching: SmallVec<[usize; 4]> = bindings
                .iter()
                .enumerate()
                .filter(|(_, b)| b.matches(contact))
                .map(|(i, _)| i)
                .collect();
            // Indices ascend, so removing from the back keeps the others valid; with a nonzero
            // interval the first (kept) one is never removed.
            let keep = usize::from(expires_s != 0);
            for &i in matching.iter().skip(keep).rev() {
                let b = bindings.remove(i);
                self.by_expiry.remove(&(b.expires_at, b.id, slot));
                self.len -= 1;
                outcome.removed += 1;
            }
            if expires_s == 0 {
                continue;
            }
            let expires_at = deadline(now, expires_s);
            let update_seq = self.next_update_seq;
            self.next_update_seq += 1;
            if let Some(&i) = matching.first() {
                let b = &mut bindings[i];
                self.by_expiry.remove(&(b.expires_at, b.id, slot));
                b.update_seq = update_seq;
                b.uri = contact.uri.clone();
                b.echo_value = contact.echo_value.clone();
                b.q_millis = contact.q_millis;
                b.instance = contact.instance.clone();
                b.reg_id = contact.reg_id;
                b.call_id = req.call_id.clone();
                b.cseq = req.cseq;
                b.path = req.path.clone();
                b.source = req.source;
                b.via_matches_source = req.via_matches_source;
                b.user_agent = req.user_agent.clone();
                b.updated_at = now;
                b.expires_at = expires_at;
                self.by_expiry.insert((expires_at, b.id, slot));
                outcome.refreshed += 1;
            } else {
                let id = BindingId(self.next_id);
                self.next_id += 1;
                // Room for exactly this one more: a Vec grows to 4 at its first push, and most
                // AORs hold one binding (a Binding is about 300 bytes, so 3 unused slots would be
                // most of an AOR's memory). max_contacts_per_aor bounds the reallocations.
                bindings.reserve_exact(1);
                bindings.push(Binding {
                    id,
                    update_seq,
                    uri: contact.uri.clone(),
                    echo_value: contact.echo_value.clone(),
                    q_millis: contact.q_millis,
                    instance: contact.instance.clone(),
                    reg_id: contact.reg_id,
                    call_id: req.call_id.clone(),
                    cseq: req.cseq,
                    path: req.path.clone(),
                    source: req.source,
                    via_matches_source: req.via_matches_source,
                    user_agent: req.user_agent.clone(),
                    registered_at: now,
                    updated_at: now,
                    expires_at,
                });
                self.by_expiry.insert((expires_at, id, slot));
                self.len += 1;
                outcome.added += 1;
            }
        }

        let max = self.config.max_contacts_per_aor.max(1);
        while bindings.len() > max {
            let Some((oldest, _)) = bindings
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.update_seq)
            else {
                break;
            };
            let b = bindings.remove(oldest);
            self.by_expiry.remove(&(b.expires_at, b.id, slot));
            self.len -= 1;
            outcome.evicted += 1;
        }

        sort_for_lookup(&mut bindings);
        outcome.contacts = echoes(&bindings, now);
        outcome.require_outbound =
            req.outbound_supported && bindings.iter().any(|b| b.reg_id.is_some());
        if bindings.is_empty() {
            self.release(slot);
        } else if let Some(record) = self.record_mut(slot) {
            record.bindings = bindings;
        }
        Ok(outcome)
    }

    /// Refuses what [`BindingStore::register`] would refuse (interval too brief, an old CSeq for
    /// a held binding, a bad `*`), changing nothing. With a database behind the store, the owner
    /// shard checks here first and writes only what passes: the database's script applies the
    /// ordering rules again against what every node wrote.
    pub fn check_register(&self, req: &RegisterRequest, now: Instant) -> Result<(), RegisterError> {
        let slot = self.slots.get(&req.aor).copied();
        self.check(req, slot, now).map(|_| ())
    }

    /// Makes the store hold exactly `stored` for `aor`, as the database returned them after a
    /// write or a read: with a database behind it the store is that database's cache. Expired
    /// entries are left out; an AOR with none left is forgotten. `StoreFull` when the AOR is new
    /// and the shard holds `max_aors_per_shard` already (the database still has it; lookups
    /// read it there).
    ///
    /// At most `max_contacts_per_aor` are kept, the first in `stored`'s order (lookup order):
    /// the database may hold more (written by a node configured with a higher limit, or a reply
    /// that is not what the script returns), and the limit bounds the shard's memory per AOR.
    pub fn load(
        &mut self,
        aor: &Aor,
        stored: &[StoredBinding],
        now: Instant,
    ) -> Result<(), RegisterError> {
        let slot = self.slots.get(aor).copied();
        if let Some(slot) = slot {
            let old = self
                .record_mut(slot)
                .map(|r| std::mem::take(&mut r.bindings))
                .unwrap_or_default();
            for b in &old {
                self.by_expiry.remove(&(b.expires_at, b.id, slot));
            }
            self.len -= old.len();
        }
        let live: Vec<&StoredBinding> = stored
            .iter()
            .filter(|b| now < b.expires_at)
            .take(self.config.max_contacts_per_aor.max(1))
            .collect();
        let slot = match slot {
            Some(slot) if live.is_empty() => {
                self.release(slot);
                return Ok(());
            }
            None if live.is_empty() => return Ok(()),
            Some(slot) => slot,
            None if self.slots.len() >= self.config.max_aors_per_shard => {
                return Err(RegisterError::StoreFull);
            }
            None => self.allocate(aor.clone()),
        };
        // `stored` is in lookup order (most recently updated first among equal q): number them
        // from the back so that the order survives `sort_for_lookup`.
        let mut bindings = Vec::with_capacity(live.len());
        for s in live.iter().rev() {
            let id = BindingId(self.next_id);
            self.next_id += 1;
            let update_seq = self.next_update_seq;
            self.next_update_seq += 1;
            self.by_expiry.insert((s.expires_at, id, slot));
            bindings.push(Binding {
                id,
                update_seq,
                uri: s.uri.clone(),
                echo_value: s.echo_value.clone(),
                q_millis: s.q_millis,
                instance: s.instance.clone(),
                reg_id: s.reg_id,
                call_id: s.call_id.clone(),
                cseq: s.cseq,
                path: s.path.clone(),
                source: s.source,
                via_matches_source: s.via_matches_source,
                user_agent: s.user_agent.clone(),
                registered_at: s.registered_at,
                updated_at: s.updated_at,
                expires_at: s.expires_at,
            });
        }
        self.len += bindings.len();
        sort_for_lookup(&mut bindings);
        if let Some(record) = self.record_mut(slot) {
            record.bindings = bindings;
        }
        Ok(())
    }

    /// The checks of [`BindingStore::register`] that may refuse the request: the granted
    /// interval of each contact, or the error. Changes nothing.
    fn check(
        &self,
        req: &RegisterRequest,
        slot: Option<u32>,
        now: Instant,
    ) -> Result<SmallVec<[u32; 4]>, RegisterError> {
        let existing: &[Binding] = slot
            .and_then(|s| self.record(s))
            .map_or(&[], |r| &r.bindings);
        let stale = |b: &Binding| b.call_id == req.call_id && req.cseq <= b.cseq;
        if req.star {
            // §10.3 step 6: "*" removes bindings of other Call-IDs, and of this Call-ID only with
            // a higher CSeq; otherwise the whole request fails.
            if existing.iter().any(|b| b.is_live(now) && stale(b)) {
                return Err(RegisterError::InvalidCSeq);
            }
            return Ok(SmallVec::new());
        }
        let mut granted_s = SmallVec::with_capacity(req.contacts.len());
        for contact in &req.contacts {
            granted_s.push(
                self.config
                    .granted_expires_s(contact.expires_s.or(req.expires_s))?,
            );
        }
        for contact in &req.contacts {
            let refused = existing
                .iter()
                .any(|b| b.is_live(now) && b.matches(contact) && stale(b));
            if refused {
                return Err(RegisterError::InvalidCSeq);
            }
        }
        Ok(granted_s)
    }

    /// Drops what the store holds for `aor` (another node changed it in Redis): the next lookup
    /// reads it again. True if something was dropped.
    pub fn forget(&mut self, aor: &Aor) -> bool {
        let Some(slot) = self.slots.get(aor).copied() else {
            return false;
        };
        let bindings = self
            .record_mut(slot)
            .map(|r| std::mem::take(&mut r.bindings))
            .unwrap_or_default();
        for b in &bindings {
            self.by_expiry.remove(&(b.expires_at, b.id, slot));
        }
        self.len -= bindings.len();
        self.release(slot);
        true
    }

    /// Drops everything (the database's change notifications were interrupted, so any entry may
    /// be stale). Keeps the index's allocation.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.records.clear();
        self.free_slots.clear();
        self.by_expiry.clear();
        self.len = 0;
    }

    /// Whether the store holds bindings of `aor` (some may have expired since). In Redis mode a
    /// miss means "read Redis", not "not registered".
    pub fn holds(&self, aor: &Aor) -> bool {
        self.slots.contains_key(aor)
    }

    /// The live bindings of `aor` at `now`: q descending, then most recently updated first.
    pub fn lookup<'s>(
        &'s self,
        aor: &Aor,
        now: Instant,
    ) -> impl Iterator<Item = &'s Binding> + use<'s> {
        let bindings: &'s [Binding] = self
            .slots
            .get(aor)
            .and_then(|&s| self.record(s))
            .map_or(&[], |r| &r.bindings);
        bindings.iter().filter(move |b| b.is_live(now))
    }

    /// The earliest time a binding's time is up: when the shard's timer should call
    /// [`BindingStore::expire`].
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|&(at, _, _)| at)
    }

    /// Removes every binding whose time is up at `now` (`expires_at <= now`); returns how many.
    /// Cost: O(log n) per binding removed, plus the record's size to find it in its AOR.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some(&(at, id, slot)) = self.by_expiry.first() {
            if at > now {
                break;
            }
            self.by_expiry.pop_first();
            let Some(record) = self.record_mut(slot) else {
                debug_assert!(false, "index entry for a free slot");
                continue;
            };
            if let Some(i) = record.bindings.iter().position(|b| b.id == id) {
                record.bindings.remove(i);
                removed += 1;
            } else {
                debug_assert!(false, "index entry without its binding");
            }
            if record.bindings.is_empty() {
                self.release(slot);
            }
        }
        self.len -= removed;
        removed
    }

    /// Removes every binding registered over stream connection `connection` (it closed, so its
    /// UAs cannot be reached on it; RFC 5626 §5.3). Returns how many.
    ///
    /// Scans every binding: flows close far less often than REGISTERs arrive. An index by
    /// connection comes with the flow-failure handling of the edge proxy.
    pub fn remove_flow(&mut self, connection: u64) -> usize {
        let mut removed = 0;
        for slot in 0..self.records.len() {
            let slot = slot as u32;
            let Some(record) = self.record_mut(slot) else {
                continue;
            };
            let mut gone = Vec::new();
            record.bindings.retain(|b| {
                let on_flow =
                    b.source.transport.is_stream() && b.source.connection == Some(connection);
                if on_flow {
                    gone.push((b.expires_at, b.id, slot));
                }
                !on_flow
            });
            let empty = record.bindings.is_empty();
            for key in &gone {
                self.by_expiry.remove(key);
            }
            removed += gone.len();
            if empty {
                self.release(slot);
            }
        }
        self.len -= removed;
        removed
    }

    fn record(&self, slot: u32) -> Option<&Record> {
        self.records.get(slot as usize)?.as_ref()
    }

    fn record_mut(&mut self, slot: u32) -> Option<&mut Record> {
        self.records.get_mut(slot as usize)?.as_mut()
    }

    fn allocate(&mut self, aor: Aor) -> u32 {
        let record = Record {
            aor: aor.clone(),
            bindings: Vec::new(),
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.records[slot as usize] = Some(record);
                slot
            }
            None => {
                // More than 2^32 AORs in one shard would exhaust memory long before.
                let slot = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
                self.records.push(Some(record));
                slot
            }
        };
        self.slots.insert(aor, slot);
        slot
    }

    fn release(&mut self, slot: u32) {
        if let Some(record) = self.records.get_mut(slot as usize).and_then(Option::take) {
            self.slots.remove(&record.aor);
            self.free_slots.push(slot);
        }
    }

    /// Checks every invariant of the layout (see the module documentation); for tests and
    /// simulations. O(n log n).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut count = 0;
        let mut ids = std::collections::HashSet::new();
        for (slot, record) in self.records.iter().enumerate() {
            let slot = slot as u32;
            let Some(record) = record else {
                if !self.free_slots.contains(&slot) {
                    return Err(format!("slot {slot} is empty but not free"));
                }
                continue;
            };
            if self.slots.get(&record.aor) != Some(&slot) {
                return Err(format!("{} not indexed at slot {slot}", record.aor));
            }
            if record.bindings.is_empty() {
                return Err(format!("{} has an empty record", record.aor));
            }
            if record.bindings.len() > self.config.max_contacts_per_aor.max(1) {
                return Err(format!("{} has too many bindings", record.aor));
            }
            let mut sorted = record.bindings.clone();
            sort_for_lookup(&mut sorted);
            if sorted != record.bindings {
                return Err(format!("{} bindings out of order", record.aor));
            }
            for b in &record.bindings {
                if !ids.insert(b.id) {
                    return Err(format!("binding id {:?} repeated", b.id));
                }
                if !self.by_expiry.contains(&(b.expires_at, b.id, slot)) {
                    return Err(format!("binding {:?} missing from the expiry index", b.id));
                }
                count += 1;
            }
        }
        if count != self.len || self.by_expiry.len() != self.len {
            return Err(format!(
                "len {} but {count} bindings and {} index entries",
                self.len,
                self.by_expiry.len()
            ));
        }
        if self.slots.len() + self.free_slots.len() != self.records.len() {
            return Err("slots, free slots and records disagree".into());
        }
        Ok(())
    }
}

/// `now + expires_s`; the configuration bounds intervals far below overflow, and a platform whose
/// `Instant` cannot reach that far still gets the longest interval it can represent.
fn deadline(now: Instant, expires_s: u32) -> Instant {
    let mut s = u64::from(expires_s.min(MAX_EXPIRES_LIMIT_S));
    loop {
        if let Some(at) = now.checked_add(Duration::from_secs(s)) {
            return at;
        }
        s /= 2;
    }
}

fn sort_for_lookup(bindings: &mut [Binding]) {
    bindings.sort_by(|a, b| {
        b.rank_q_millis()
            .cmp(&a.rank_q_millis())
            .then(b.update_seq.cmp(&a.update_seq))
    });
}

fn echoes(bindings: &[Binding], now: Instant) -> Vec<ContactEcho> {
    bindings
        .iter()
        .filter(|b| b.is_live(now))
        .map(|b| ContactEcho {
            value: b.echo_value.clone(),
            expires_s: b.remaining_s(now),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{Domains, Source, Transport};

    fn register(store: &mut BindingStore, contact: &str, cseq: u32, now: Instant) {
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f\r\nTo: <sip:alice@example.com>\r\n\
             Call-ID: c1\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = sipshard_net::Message::parse_datagram(text.as_bytes()).expect("parses");
        let addr = "198.51.100.7:5060".parse().expect("address");
        let source = Source {
            transport: Transport::Udp,
            remote: addr,
            local: addr,
            connection: None,
        };
        let req = RegisterRequest::from_message(&msg, source, store.config()).expect("request");
        store.register(req, now).expect("registered");
    }

    /// Memory per binding: an AOR's bindings take the room they need, not a Vec's first
    /// growth to 4 (most AORs hold one binding, and the 1M-binding benchmark counts it).
    #[test]
    fn an_aors_bindings_take_only_the_room_they_need() {
        let mut store = BindingStore::new(RegistrarConfig {
            domains: Domains::list(["example.com"]).expect("domains"),
            ..RegistrarConfig::default()
        });
        let now = Instant::now();
        let capacity = |store: &BindingStore| {
            let record = store.records.iter().flatten().next().expect("one AOR");
            (record.bindings.len(), record.bindings.capacity())
        };
        register(&mut store, "<sip:alice@198.51.100.7>", 1, now);
        assert_eq!(capacity(&store), (1, 1));
        register(&mut store, "<sip:alice@198.51.100.8>", 2, now);
        assert_eq!(capacity(&store), (2, 2));
        // A refresh adds nothing.
        register(&mut store, "<sip:alice@198.51.100.8>", 3, now);
        assert_eq!(capacity(&store), (2, 2));
    }
}
