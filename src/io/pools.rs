//! Where in-flight storage comes from: the buffer pool and, for bulk
//! directions, the pipe pool. Built in one place, at start and at reload
//! alike, so both keep the same number of idle buffers and pipes.

use crate::io::buffer::BufferPool;
use crate::io::pipe::PipePool;

/// Idle buffers kept for reuse, at most.
pub const BUFFERS_KEEP: usize = 256;
/// Idle pipes kept for reuse, at most (two descriptors each).
pub const PIPES_KEEP: usize = 64;
/// Bytes of idle storage each pool keeps at most, whatever the sizes: with
/// `buffer_size = 16 MiB` the buffer pool keeps one idle buffer, not 256.
pub const IDLE_BYTES: usize = 16 << 20;

/// How many idle items of `size` bytes a pool keeps: the count limit, or
/// fewer when they would pass [`IDLE_BYTES`] (always at least one).
pub fn keep(size: usize, count: usize) -> usize {
    (IDLE_BYTES / size.max(1)).clamp(1, count)
}

/// Pipes for splicing hold at least 64 KiB: with the kernel's 4 KiB page
/// slots a smaller pipe costs about half again as much CPU per GB (measured
/// with scripts/compare.sh: 0.42 vs 0.28 CPU-s/GB). The bound per direction
/// stays fixed; it is kernel memory, not the process's.
pub fn pipe_size(buffer_size: usize) -> usize {
    buffer_size.max(64 * 1024)
}

/// The pools a pair takes in-flight storage from: user-space buffers, and
/// on Linux pipes for splicing bulk directions (`None` when splice is off).
pub struct Pools {
    pub buffers: BufferPool,
    pub pipes: Option<PipePool>,
}

impl Pools {
    /// Pools handing out `buffer_size` buffers, and pipes when `splice`.
    pub fn new(buffer_size: usize, splice: bool) -> Pools {
        Pools {
            buffers: BufferPool::new(buffer_size, keep(buffer_size, BUFFERS_KEEP)),
            pipes: splice.then(|| new_pipes(buffer_size)),
        }
    }

    /// A reload's settings: new sizes apply to what is handed out from now
    /// on; storage lent out comes back as it is.
    pub fn configure(&mut self, buffer_size: usize, splice: bool) {
        self.buffers.set_size(buffer_size, keep(buffer_size, BUFFERS_KEEP));
        match (&mut self.pipes, splice) {
            (Some(p), true) => p.set_size(pipe_size(buffer_size), keep(pipe_size(buffer_size), PIPES_KEEP)),
            (p @ None, true) => *p = Some(new_pipes(buffer_size)),
            (p, false) => *p = None,
        }
    }
}

fn new_pipes(buffer_size: usize) -> PipePool {
    let size = pipe_size(buffer_size);
    PipePool::new(size, keep(size, PIPES_KEEP))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe pool made by a reload keeps as many idle pipes as one made at
    /// start (it once kept 256 at start and 64 after a reload).
    #[test]
    fn reload_and_start_keep_the_same_limits() {
        let at_start = Pools::new(16384, true);
        let mut reloaded = Pools::new(16384, false);
        assert!(reloaded.pipes.is_none());
        reloaded.configure(16384, true);
        let (a, b) = (at_start.pipes.as_ref().unwrap(), reloaded.pipes.as_ref().unwrap());
        assert_eq!(a.max_free(), PIPES_KEEP);
        assert_eq!(b.max_free(), a.max_free());
        assert_eq!(reloaded.buffers.max_free(), at_start.buffers.max_free());
    }

    /// Idle storage is bounded in bytes: large buffers are kept by the
    /// handful, not by the hundred, at start and after a reload alike.
    #[test]
    fn idle_storage_has_a_byte_budget() {
        let small = Pools::new(16384, true);
        assert_eq!(small.buffers.max_free(), BUFFERS_KEEP);
        assert_eq!(small.pipes.as_ref().unwrap().max_free(), PIPES_KEEP);
        let mut big = Pools::new(16 << 20, true);
        assert_eq!(big.buffers.max_free(), 1);
        assert_eq!(big.pipes.as_ref().unwrap().max_free(), 1);
        big.configure(1 << 20, true);
        assert_eq!(big.buffers.max_free(), 16);
        assert_eq!(big.pipes.as_ref().unwrap().max_free(), 16);
        let mut pool = BufferPool::new(8 << 20, keep(8 << 20, BUFFERS_KEEP));
        let lent: Vec<_> = (0..10).map(|_| pool.get()).collect();
        for b in lent {
            pool.put(b);
        }
        assert_eq!(pool.idle_bytes(), IDLE_BYTES, "10 returned, 2 kept");
    }
}
