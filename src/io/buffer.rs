//! Bytes in flight: the fixed-size byte buffers that hold data in
//! flight between a read from one socket and a write to the other, and the
//! pool they are taken from only while data is in flight.

/// A fixed-capacity byte queue: bytes are appended at `end` and consumed from
/// `start`; it compacts itself when the tail is reached.
pub struct Buffer {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buffer {
    /// A new empty buffer of `size` bytes.
    pub fn new(size: usize) -> Buffer {
        Buffer::from_storage(vec![0u8; size].into_boxed_slice())
    }

    fn from_storage(data: Box<[u8]>) -> Buffer {
        Buffer { data, start: 0, end: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn is_full(&self) -> bool {
        self.len() == self.data.len()
    }

    /// The bytes waiting to be written.
    pub fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Marks `n` bytes as written.
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space to read into, compacting first if that makes room.
    pub fn space(&mut self) -> &mut [u8] {
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` bytes of [`space`](Self::space) as filled.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Appends as much of `bytes` as fits; returns how much did.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let space = self.space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }
}

pub use crate::io::pools::Pools;

/// Keeps released buffers for reuse so that steady traffic allocates nothing.
/// Holds at most `max_free` idle buffers; the rest go back to the allocator.
pub struct BufferPool {
    size: usize,
    free: Vec<Box<[u8]>>,
    max_free: usize,
    in_use: usize,
}

impl BufferPool {
    pub fn new(size: usize, max_free: usize) -> BufferPool {
        BufferPool {
            size,
            free: Vec::new(),
            max_free,
            in_use: 0,
        }
    }

    /// Buffer size handed out from now on, and idle buffers kept (a reload
    /// may change both).
    pub fn set_size(&mut self, size: usize, max_free: usize) {
        if size != self.size {
            self.size = size;
            self.free.clear();
        }
        self.max_free = max_free;
        self.free.truncate(max_free);
    }

    /// Bytes held by idle buffers.
    pub fn idle_bytes(&self) -> usize {
        self.free.len() * self.size
    }

    /// Buffers currently lent out.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn get(&mut self) -> Buffer {
        self.in_use += 1;
        match self.free.pop() {
            Some(data) => Buffer::from_storage(data),
            None => Buffer::new(self.size),
        }
    }

    /// Idle buffers kept at most.
    pub fn max_free(&self) -> usize {
        self.max_free
    }

    pub fn put(&mut self, buf: Buffer) {
        self.in_use = self.in_use.saturating_sub(1);
        if buf.data.len() == self.size && self.free.len() < self.max_free {
            self.free.push(buf.data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_consume_compact() {
        let mut b = Buffer::new(8);
        assert_eq!(b.push(b"abcdefghij"), 8);
        assert!(b.is_full());
        b.consume(3);
        assert_eq!(b.data(), b"defgh");
        assert_eq!(b.space().len(), 3);
        assert_eq!(b.push(b"xyz"), 3);
        assert_eq!(b.data(), b"defghxyz");
        b.consume(100);
        assert!(b.is_empty());
        assert_eq!(b.space().len(), 8);
    }

    #[test]
    fn pool_reuses_and_bounds() {
        let mut p = BufferPool::new(16, 1);
        let a = p.get();
        let b = p.get();
        assert_eq!(p.in_use(), 2);
        p.put(a);
        p.put(b);
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.free.len(), 1);
        p.set_size(32, 1);
        assert_eq!(p.get().capacity(), 32);
    }
}
