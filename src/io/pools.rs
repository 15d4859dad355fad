//! Where in-flight storage comes from: the buffer pool and, for bulk
//! directions, the pipe pool. Built in one place, at start and at reload
//! alike, so both keep the same number of idle buffers and pipes.

use crate::io::buffer::BufferPool;
use crate::io::pipe::PipePool;

/// Idle buffers kept for reuse.
pub const BUFFERS_KEEP: usize = 256;
/// Idle pipes kept for reuse (two descriptors each).
pub const PIPES_KEEP: usize = 64;

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
            buffers: BufferPool::new(buffer_size, BUFFERS_KEEP),
            pipes: splice.then(|| PipePool::new(pipe_size(buffer_size), PIPES_KEEP)),
        }
    }

    /// A reload's settings: new sizes apply to what is handed out from now
    /// on; storage lent out comes back as it is.
    pub fn configure(&mut self, buffer_size: usize, splice: bool) {
        self.buffers.set_size(buffer_size);
        match (&mut self.pipes, splice) {
            (Some(p), true) => p.set_size(pipe_size(buffer_size)),
            (p @ None, true) => *p = Some(PipePool::new(pipe_size(buffer_size), PIPES_KEEP)),
            (p, false) => *p = None,
        }
    }
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
}
