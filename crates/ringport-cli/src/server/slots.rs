//! The connection table: slots found by index, so a completion reaches its
//! connection without a shared lock, a hash or a reference-count change.
//!
//! Every operation of a connection carries its slot's [`Token`] (index and
//! generation) as the completion's `user` value. A worker turns the token
//! back into the slot with a little arithmetic and locks that slot alone; the
//! slot's own mutex is the per-connection lock, not an extra one.
//!
//! A slot is taken, filled, and freed once it holds nothing again. The server
//! empties a slot only when its connection is closed *and* none of its
//! operations is still in flight, so no completion can outlive the
//! connection it belongs to; freeing also bumps the slot's generation, and a
//! token whose generation is not the slot's finds nothing: a stale completion
//! can never reach a later connection in the same slot (short of 2^32 reuses
//! of one slot while that completion waits).
//!
//! The table grows in segments of [`SEGMENT`] slots that never move, so a
//! looked-up slot stays put while other slots are being added; a segment is
//! made (and its memory touched) only when the first of its slots is taken,
//! so an idle server pays for the slots it uses, not for its capacity.

use std::sync::{Mutex, OnceLock};

use super::lock;

/// Slots in one segment.
const SEGMENT: usize = 256;

/// Names one use of one slot: the index in the low 32 bits, the slot's
/// generation at the time in the high 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token(u64);

impl Token {
    fn new(index: u32, gen: u32) -> Token {
        Token(u64::from(gen) << 32 | u64::from(index))
    }

    /// The token an operation carried as its `user` value.
    pub(crate) fn from_user(user: u64) -> Token {
        Token(user)
    }

    /// The value to hand the port as an operation's `user`.
    pub(crate) fn user(self) -> u64 {
        self.0
    }

    fn index(self) -> u32 {
        self.0 as u32
    }

    fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

struct Entry<T> {
    gen: u32,
    value: Option<T>,
}

/// One slot. Not padded to a cache line: slots are per connection, and an
/// idle connection's bytes are the budget that counts (DESIGN.md section 5).
struct Slot<T>(Mutex<Entry<T>>);

impl<T> Default for Slot<T> {
    fn default() -> Slot<T> {
        Slot(Mutex::new(Entry {
            gen: 0,
            value: None,
        }))
    }
}

#[derive(Default)]
struct Free {
    /// Freed slots, each with its new generation; the last freed is reused first.
    tokens: Vec<Token>,
    /// Slots ever handed out: every index below this has its segment.
    len: u32,
}

/// [`SEGMENT`] slots, made when the first of them is taken.
type Segment<T> = Box<[Slot<T>]>;

/// The table; see the module docs.
pub(crate) struct Slots<T> {
    segments: Box<[OnceLock<Segment<T>>]>,
    /// Slots in the whole table.
    capacity: u32,
    free: Mutex<Free>,
}

/// The segment holding `index`, and the slot's place in it.
fn locate(index: u32) -> (usize, usize) {
    (index as usize / SEGMENT, index as usize % SEGMENT)
}

impl<T> Slots<T> {
    /// A table of at least `capacity` slots (rounded up to whole segments).
    pub(crate) fn new(capacity: usize) -> Slots<T> {
        let segments = capacity
            .div_ceil(SEGMENT)
            .clamp(1, u32::MAX as usize / SEGMENT);
        Slots {
            segments: (0..segments).map(|_| OnceLock::new()).collect(),
            capacity: (segments * SEGMENT) as u32,
            free: Mutex::new(Free::default()),
        }
    }

    /// Takes an empty slot for [`with`](Self::with) to fill, reusing a freed
    /// one first; None when the table is full.
    pub(crate) fn take(&self) -> Option<Token> {
        let mut free = lock(&self.free);
        if let Some(token) = free.tokens.pop() {
            return Some(token);
        }
        if free.len == self.capacity {
            return None;
        }
        let index = free.len;
        let (k, _) = locate(index);
        self.segments[k].get_or_init(|| (0..SEGMENT).map(|_| Slot::default()).collect());
        free.len += 1;
        Some(Token::new(index, 0))
    }

    fn slot(&self, index: u32) -> Option<&Slot<T>> {
        let (k, at) = locate(index);
        self.segments.get(k)?.get()?.get(at)
    }

    /// Runs `f` on the contents of the slot `token` names, under that slot's
    /// lock, and frees the slot if `f` leaves it empty. None, without calling
    /// `f`, when the token is stale (the slot was freed since).
    pub(crate) fn with<R>(&self, token: Token, f: impl FnOnce(&mut Option<T>) -> R) -> Option<R> {
        let slot = self.slot(token.index())?;
        let mut entry = lock(&slot.0);
        if entry.gen != token.gen() {
            return None;
        }
        let r = f(&mut entry.value);
        if entry.value.is_none() {
            self.free(token.index(), &mut entry);
        }
        Some(r)
    }

    /// Runs `f` on every filled slot, one slot lock at a time, freeing the
    /// slots `f` empties. Slots taken and filled meanwhile may be missed.
    pub(crate) fn each(&self, mut f: impl FnMut(&mut Option<T>)) {
        let len = lock(&self.free).len;
        for index in 0..len {
            let Some(slot) = self.slot(index) else {
                continue;
            };
            let mut entry = lock(&slot.0);
            if entry.value.is_some() {
                f(&mut entry.value);
                if entry.value.is_none() {
                    self.free(index, &mut entry);
                }
            }
        }
    }

    /// Bumps the generation of an emptied slot and lists it as free (lock
    /// order: a slot, then the free list; `take` holds only the free list).
    fn free(&self, index: u32, entry: &mut Entry<T>) {
        entry.gen = entry.gen.wrapping_add(1);
        lock(&self.free).tokens.push(Token::new(index, entry.gen));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection costs a slot, open or idle (DESIGN.md section 5).
    #[test]
    fn a_connection_slot_is_64_bytes() {
        let size = std::mem::size_of::<Slot<crate::server::conn::Conn>>();
        assert!(size <= 64, "{size}");
    }

    #[test]
    fn segments_tile_the_index_space() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(255), (0, 255));
        assert_eq!(locate(256), (1, 0));
        assert_eq!(locate(256 * 3 + 7), (3, 7));
    }

    #[test]
    fn a_full_table_refuses_a_slot() {
        let slots: Slots<()> = Slots::new(SEGMENT + 1);
        assert_eq!(slots.capacity as usize, 2 * SEGMENT, "whole segments");
        let tokens: Vec<Token> = (0..2 * SEGMENT).map(|_| slots.take().unwrap()).collect();
        assert!(slots.take().is_none());
        slots.with(tokens[5], |v| *v = None); // never filled: freed at once
        assert_eq!(slots.take().map(Token::index), Some(5));
    }

    #[test]
    fn a_stale_token_finds_nothing_after_reuse() {
        let slots = Slots::new(1024);
        let old = slots.take().unwrap();
        slots.with(old, |v| *v = Some("first"));
        slots.with(old, |v| *v = None); // freed
        let new = slots.take().unwrap();
        assert_eq!(new.index(), old.index());
        assert_ne!(new.gen(), old.gen());
        slots.with(new, |v| *v = Some("second"));
        assert_eq!(slots.with(old, |v| *v), None);
        assert_eq!(slots.with(new, |v| *v), Some(Some("second")));
    }

    #[test]
    fn grows_past_the_first_segment_and_visits_every_filled_slot() {
        let slots = Slots::new(1024);
        let tokens: Vec<Token> = (0..200).map(|_| slots.take().unwrap()).collect();
        for (i, t) in tokens.iter().enumerate() {
            slots.with(*t, |v| *v = Some(i));
        }
        let mut seen = 0;
        slots.each(|v| {
            seen += 1;
            if v.is_some_and(|i| i % 2 == 0) {
                *v = None;
            }
        });
        assert_eq!(seen, 200);
        assert_eq!(slots.with(tokens[0], |v| *v), None);
        assert_eq!(slots.with(tokens[199], |v| *v), Some(Some(199)));
    }
}
