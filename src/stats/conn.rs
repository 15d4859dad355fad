//! One stats connection: read the request head, answer from the shared views, then the common write and drain of `wire`.

use mio::net::TcpStream;

use super::budget::Work;
use super::cache::{Answer, View};
use super::http::{self, Reply, MAX_HEAD};
use super::wire::{Progress, Stage, Step, Wire};
use crate::timer::TimerKind;

/// A stats client, from accept to close.
pub(super) type Conn = Wire<TcpStream>;

/// Runs the connection's stages as far as the socket and the turn's budget
/// allow (`key`: its slot, named in its timer entries): `Wait` or `Yield`.
pub(super) fn step(conn: &mut Conn, w: &mut Work<'_, '_>, key: usize) -> Step<Progress> {
    if matches!(conn.stage, Stage::Reading) {
        let progress = read_request(conn, w)?;
        if progress != Progress::Next {
            return Ok(progress);
        }
    }
    let timer = TimerKind::StatsConn(key, conn.id);
    conn.step_out(w.budget, w.timers, w.now, timer)
}

/// Reads the request head; once it is complete (or cannot be), the
/// answer is ready to write.
fn read_request(conn: &mut Conn, w: &mut Work<'_, '_>) -> Step<Progress> {
    if w.budget.spent() {
        return Ok(Progress::Yield);
    }
    let eof = conn.read_input(MAX_HEAD, w.budget)?;
    let (answer, head_only) = match http::reply(&conn.input, eof) {
        Reply::Wait => return Ok(Progress::Wait),
        Reply::Close => return Err(()),
        Reply::Send(answer, head_only) => (answer, head_only),
        Reply::View(view, head_only) => match view_answer(view, w) {
            Some(answer) => (answer, head_only),
            None => return Ok(Progress::Yield),
        },
    };
    w.budget.spend_request();
    conn.send(&answer, head_only);
    Ok(Progress::Next)
}

/// The answer of `view`: the shared one while it is fresh, else rendered
/// now if this turn may still render (`None`: not this turn).
fn view_answer(view: View, w: &mut Work<'_, '_>) -> Option<Answer> {
    let changes = w.src.state.changes;
    if let Some(answer) = w.cache.get(view, changes, w.now) {
        return Some(answer);
    }
    if !w.budget.take_render() {
        return None;
    }
    let answer = http::render(view, w.src, w.now);
    log::trace!("stats: rendered {view:?}, {} bytes", answer.len());
    w.cache.put(view, changes, w.now, answer.clone());
    Some(answer)
}
