//! Target names to targets, in a table whose slot holds a short name itself.
//!
//! Every decision that names its target looks it up here first. A hash map keyed by `String`
//! reads a control byte, the slot and then the name's own allocation: three places in memory
//! that, with thousands of targets, no recent decision read. Here a slot of 32 bytes holds the
//! name when it has at most [`INLINE`] bytes, with the target's position and whether it has a
//! path prefix, so that a lookup reads one cache line; a longer name is compared with the
//! target's own.

use std::hash::Hasher as _;

use super::TargetInfo;
use super::index::FastHasher;

/// The longest name a slot holds.
const INLINE: usize = 22;

/// A declared target, as the table finds it.
#[derive(Debug, Clone, Copy)]
pub(super) struct TargetSlot {
    pub position: u32,
    /// Whether the target restricts the request's resource: see [`super::resource_refused`].
    pub restricts_resource: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u32,
    position: u32,
    restricts_resource: bool,
    /// The name's length; [`FREE`] for a free slot.
    len: u8,
    /// The name, when it has at most [`INLINE`] bytes; then compared with `len` of them.
    inline: [u8; INLINE],
}

/// [`Slot::len`] of a free slot.
const FREE: u8 = u8::MAX;

/// [`Slot::len`] of a name longer than [`INLINE`] bytes.
const LONG: u8 = u8::MAX - 1;

const _: () = assert!(
    size_of::<Slot>() == 32,
    "two slots should share a cache line"
);

/// An open-addressed table, probed linearly, at most three quarters full.
#[derive(Debug, Default)]
pub(super) struct TargetTable {
    slots: Vec<Slot>,
}

impl TargetTable {
    /// The table of `targets`; of two targets with one name (which the loader refuses), the
    /// first.
    pub fn build(
        targets: &[TargetInfo],
        restricts_resource: impl Fn(&TargetInfo) -> bool,
    ) -> TargetTable {
        let capacity = (targets.len() + targets.len() / 3 + 1).next_power_of_two();
        let free = Slot {
            hash: 0,
            position: 0,
            restricts_resource: false,
            len: FREE,
            inline: [0; INLINE],
        };
        let mut table = TargetTable {
            slots: vec![free; capacity],
        };
        for (position, target) in (0u32..).zip(targets) {
            let name = target.name.as_str();
            if table.get(name, targets).is_some() {
                continue;
            }
            let mut slot = Slot {
                hash: name_hash(name),
                position,
                restricts_resource: restricts_resource(target),
                len: LONG,
                inline: [0; INLINE],
            };
            if let Some(inline) = slot.inline.get_mut(..name.len()) {
                inline.copy_from_slice(name.as_bytes());
                slot.len = name.len() as u8;
            }
            let mask = capacity - 1;
            let mut at = slot.hash as usize & mask;
            while table.slots.get(at).is_some_and(|taken| taken.len != FREE) {
                at = (at + 1) & mask;
            }
            if let Some(free) = table.slots.get_mut(at) {
                *free = slot;
            }
        }
        table
    }

    /// The target called `name`; `targets` are those the table was built from.
    pub fn get(&self, name: &str, targets: &[TargetInfo]) -> Option<TargetSlot> {
        let mask = self.slots.len().checked_sub(1)?;
        let hash = name_hash(name);
        let mut at = hash as usize & mask;
        // The table is never full, so a free slot ends every probe; the count is a backstop.
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(at)?;
            if slot.len == FREE {
                return None;
            }
            if slot.hash == hash && slot_holds(slot, name, targets) {
                return Some(TargetSlot {
                    position: slot.position,
                    restricts_resource: slot.restricts_resource,
                });
            }
            at = (at + 1) & mask;
        }
        None
    }
}

fn slot_holds(slot: &Slot, name: &str, targets: &[TargetInfo]) -> bool {
    if slot.len == LONG {
        let target = targets.get(slot.position as usize);
        return target.is_some_and(|target| target.name == name);
    }
    slot.inline.get(..usize::from(slot.len)) == Some(name.as_bytes())
}

fn name_hash(name: &str) -> u32 {
    let mut hasher = FastHasher::default();
    hasher.write(name.as_bytes());
    (hasher.finish() >> 32) as u32
}
