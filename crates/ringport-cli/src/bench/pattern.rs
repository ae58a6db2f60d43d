//! The bytes each connection sends: a window into one shared pseudo-random
//! table, at an offset of its own, so every echoed byte can be checked
//! against what was sent without keeping a copy.

/// A prime, so message sizes never line up with the table's period.
const LEN: usize = 1_000_003;

/// The shared table of pseudo-random bytes.
#[derive(Debug)]
pub struct Pattern {
    table: Vec<u8>,
}

impl Default for Pattern {
    fn default() -> Pattern {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let table = (0..LEN)
            .map(|_| {
                // xorshift64*
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect();
        Pattern { table }
    }
}

impl Pattern {
    /// The first table index of connection `conn`'s byte stream.
    pub fn origin(conn: usize) -> u64 {
        (conn as u64).wrapping_mul(7919) % LEN as u64
    }

    /// Calls `f` on the table slices that make up `len` bytes from stream
    /// offset `at` of a connection starting at `origin`.
    fn chunks(&self, origin: u64, at: u64, len: usize, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        let mut i = ((origin + at) % LEN as u64) as usize;
        let mut left = len;
        while left > 0 {
            let n = left.min(LEN - i);
            if !f(&self.table[i..i + n]) {
                return false;
            }
            left -= n;
            i = 0;
        }
        true
    }

    /// Appends `len` bytes of the stream from offset `at` to `out`.
    pub fn fill(&self, origin: u64, at: u64, len: usize, out: &mut Vec<u8>) {
        self.chunks(origin, at, len, |c| {
            out.extend_from_slice(c);
            true
        });
    }

    /// True when `got` equals the stream from offset `at`.
    pub fn check(&self, origin: u64, at: u64, got: &[u8]) -> bool {
        let mut rest = got;
        self.chunks(origin, at, got.len(), |c| {
            let (head, tail) = rest.split_at(c.len());
            rest = tail;
            head == c
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_check_across_the_wrap() {
        let p = Pattern::default();
        let origin = LEN as u64 - 10;
        let mut v = Vec::new();
        p.fill(origin, 5, 100, &mut v);
        assert_eq!(v.len(), 100);
        assert!(p.check(origin, 5, &v));
        assert!(p.check(origin, 50, &v[45..]));
        v[60] ^= 1;
        assert!(!p.check(origin, 5, &v));
        assert!(!p.check(origin, 6, &v[..10]));
    }
}
