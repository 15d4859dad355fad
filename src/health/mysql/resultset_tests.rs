//! Health flow, MySQL check, result-set tests: well-formed answers read,
//! and random, truncated and mutated ones never panic and stay bounded.

use super::*;
use crate::health::mysql::testutil::{self, EOF, OK};
use crate::rng::Rng;

/// Feeds packets until the answer ends (or a packet is refused).
fn read(packets: &[Vec<u8>]) -> Result<Option<Feed>, Malformed> {
    let mut r = ResultReader::new();
    for p in packets {
        match r.feed(p)? {
            Feed::More => {}
            end => return Ok(Some(end)),
        }
    }
    Ok(None)
}

#[test]
fn a_result_set_reads_into_a_table() {
    let packets = testutil::result_set(
        &["a", "Seconds_Behind_Master"],
        &[&[Some("x"), None], &[Some(""), Some("7")]],
    );
    let Ok(Some(Feed::Done(t))) = read(&packets) else {
        panic!()
    };
    assert_eq!(t.columns, ["a", "Seconds_Behind_Master"]);
    assert_eq!(t.get(0, "A"), Some(Some("x")));
    assert_eq!(t.get(0, "seconds_behind_master"), Some(None));
    assert_eq!(t.get(1, "a"), Some(Some("")));
    assert_eq!(t.get(2, "a"), None);
    assert_eq!(t.get(0, "b"), None);
    assert_eq!(
        t.get_any(1, &["Seconds_Behind_Source", "Seconds_Behind_Master"]),
        Some(Some("7"))
    );
}

#[test]
fn ok_err_and_empty_answers() {
    assert_eq!(read(&[OK.to_vec()]), Ok(Some(Feed::Done(Table::default()))));
    let Ok(Some(Feed::Failed(e))) = read(&[testutil::err(1064, "You have an error")]) else {
        panic!()
    };
    assert_eq!((e.code, e.message.as_str()), (1064, "You have an error"));
    let Ok(Some(Feed::Done(t))) = read(&testutil::result_set(&["x"], &[])) else {
        panic!()
    };
    assert!(t.rows.is_empty());
    // An ERR in the middle of the rows.
    let mut packets = testutil::result_set(&["x"], &[&[Some("1")]]);
    packets.insert(4, testutil::err(1317, "Query execution was interrupted"));
    assert!(matches!(read(&packets), Ok(Some(Feed::Failed(_)))));
}

#[test]
fn malformed_answers_are_refused_with_a_reason() {
    let cases: [(Vec<Vec<u8>>, &str); 7] = [
        (vec![vec![0xfb, b'f']], "server asked for a LOCAL INFILE"),
        (vec![vec![2, 0]], "bad column count"),
        (vec![vec![0xfc, 0x01]], "bad column count"),
        (vec![vec![0xfc, 0xff, 0xff]], "too many columns"),
        (vec![vec![1], vec![3, b'd']], "bad column definition"),
        (
            vec![vec![1], testutil::column("a"), vec![1]],
            "no EOF after the column definitions",
        ),
        (
            vec![vec![1], testutil::column("a"), EOF.to_vec(), vec![1, b'x', b'y']],
            "bad row",
        ),
    ];
    for (packets, why) in cases {
        assert_eq!(read(&packets), Err(Malformed(why)), "{packets:?}");
    }
    // A row with fewer values than columns.
    let mut short = testutil::result_set(&["a", "b"], &[&[Some("1"), Some("2")]]);
    short[4] = testutil::row(&[Some("1")]);
    assert_eq!(read(&short), Err(Malformed("bad row")));
}

#[test]
fn rows_past_the_cap_are_dropped_and_bytes_past_the_cap_refused() {
    let row: [Option<&str>; 1] = [Some("v")];
    let rows: Vec<&[Option<&str>]> = (0..100).map(|_| &row[..]).collect();
    let Ok(Some(Feed::Done(t))) = read(&testutil::result_set(&["a"], &rows)) else {
        panic!()
    };
    assert_eq!(t.rows.len(), MAX_ROWS);
    let mut r = ResultReader::new();
    r.feed(&[1]).unwrap();
    r.feed(&testutil::column("a")).unwrap();
    r.feed(EOF).unwrap();
    let big = testutil::row(&[Some(&"x".repeat(60_000))]);
    let mut fed = 0;
    let end = loop {
        match r.feed(&big) {
            Ok(Feed::More) => fed += 1,
            other => break other,
        }
    };
    assert_eq!(end, Err(Malformed("result set too large")));
    assert!(fed * big.len() <= MAX_RESULT, "{fed}");
}

/// A valid answer to mutate: a few columns and rows.
fn sample() -> Vec<Vec<u8>> {
    testutil::result_set(
        &[
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Seconds_Behind_Master",
            "Last_Error",
        ],
        &[
            &[Some("Yes"), Some("Yes"), Some("0"), Some("")],
            &[Some("No"), None, None, Some("boom")],
        ],
    )
}

/// Property: whatever the packets, `feed` returns (never panics), a table
/// never exceeds the caps, and the answer ends or is refused within the
/// byte cap.
#[test]
fn random_and_mutated_answers_never_panic() {
    let mut rng = Rng::with_seed(7);
    for round in 0..20_000 {
        let mut packets = sample();
        match round % 4 {
            // Flip, insert or drop bytes.
            0 | 1 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(packets.len() as u64) as usize;
                    let p = &mut packets[i];
                    let at = rng.below(p.len() as u64 + 1) as usize;
                    match rng.below(3) {
                        0 if at < p.len() => p[at] = rng.next_u64() as u8,
                        1 => p.insert(at, rng.next_u64() as u8),
                        _ => p.truncate(at),
                    }
                }
            }
            // Drop or repeat whole packets.
            2 => {
                let i = rng.below(packets.len() as u64) as usize;
                if rng.below(2) == 0 {
                    packets.remove(i);
                } else {
                    let p = packets[i].clone();
                    packets.insert(i, p);
                }
            }
            // Pure noise.
            _ => {
                packets = (0..rng.below(8))
                    .map(|_| (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect())
                    .collect();
            }
        }
        if let Ok(Some(Feed::Done(t))) = read(&packets) {
            assert!(t.columns.len() <= MAX_COLUMNS && t.rows.len() <= MAX_ROWS);
            assert!(t.rows.iter().all(|r| r.len() == t.columns.len()));
        }
    }
}
