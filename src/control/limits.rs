//! Process set-up the configuration asks for: the descriptor limit that
//! `max_connections` needs and the pid file. Used at start and again by a
//! reload that changes them.

use std::io;
use std::path::Path;

/// Raises the soft RLIMIT_NOFILE towards what `max_connections` needs (two
/// descriptors per connection, plus pipes and probes), as far as the hard
/// limit allows, like HAProxy does; warns when the hard limit is too low.
pub fn raise_fd_limit(max_connections: usize) {
    let need = (max_connections as libc::rlim_t).saturating_mul(2);
    let want = need.saturating_add(256);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur >= want {
        return;
    }
    let old = lim.rlim_cur;
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: as above.
    if lim.rlim_cur > old && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        log::info!("file descriptor limit raised from {old} to {}", lim.rlim_cur);
    }
    if lim.rlim_cur < need {
        log::warn!(
            "file descriptor limit {} is below the {need} that max_connections = {max_connections} needs; \
             past it new clients wait (raise the hard limit, e.g. LimitNOFILE in systemd)",
            lim.rlim_cur
        );
    }
}

/// Writes this process's pid to `path`.
pub fn write_pid_file(path: &Path) -> io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}
