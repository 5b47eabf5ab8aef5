//! A bounded slab with generational ids: transactions are stored by index, an id of a removed
//! transaction never reaches its successor in the same slot (a late timer or a late response
//! from the proxy core finds nothing instead of the wrong transaction).

/// An index into a [`Slab`] plus the generation of the value it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SlotId {
    index: u32,
    generation: u32,
}

impl SlotId {
    #[cfg(test)]
    pub(crate) fn new(index: u32, generation: u32) -> SlotId {
        SlotId { index, generation }
    }
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// At most `capacity` values; slots are reused, their generation bumped on removal.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// Indices of empty slots.
    free: Vec<u32>,
    len: usize,
    capacity: usize,
}

impl<T> Slab<T> {
    /// `capacity` is capped at 2^32 slots; memory grows with use, never beyond the cap.
    pub(crate) fn new(capacity: usize) -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            capacity: capacity.min(u32::MAX as usize),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Stores `value`; `None` when the slab is full.
    pub(crate) fn insert(&mut self, value: T) -> Option<SlotId> {
        if self.is_full() {
            return None;
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                // len < capacity <= u32::MAX and every slot is in use, so the index fits.
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.value = Some(value);
        self.len += 1;
        Some(SlotId {
            index,
            generation: slot.generation,
        })
    }

    pub(crate) fn get(&self, id: SlotId) -> Option<&T> {
        self.slots
            .get(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.value.as_ref())
    }

    pub(crate) fn get_mut(&mut self, id: SlotId) -> Option<&mut T> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.value.as_mut())
    }

    pub(crate) fn remove(&mut self, id: SlotId) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.index as usize)
            .filter(|slot| slot.generation == id.generation)?;
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.len -= 1;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_generational() {
        let mut slab = Slab::new(2);
        let a = slab.insert("a").unwrap();
        let b = slab.insert("b").unwrap();
        assert!(slab.is_full());
        assert_eq!(slab.insert("c"), None);
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None);
        let c = slab.insert("c").unwrap();
        assert_eq!(slab.get(a), None, "the old id does not reach the new value");
        assert_eq!(slab.get(c), Some(&"c"));
        assert_eq!(slab.get_mut(b), Some(&mut "b"));
        assert_eq!(slab.len(), 2);
    }
}
