//! The reader checked against itself and against redis-rs's parser, reply after reply: shared
//! by the property tests and the fuzz target (feature `fuzzing`).

use super::*;

/// How [`check_reader`] stopped reading its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Every byte was read, as whole replies.
    End,
    /// The rest is the start of a reply that is not all in yet.
    More,
    /// The rest is refused.
    Refused,
}

/// Reads `data` as the connection does, reply after reply from the start, and panics on any
/// disagreement: `skip` and `parse` give the same verdict (refused, not all in yet, or a
/// reply and where it ends); redis-rs's parser reads each reply we accept, those exact bytes,
/// to the same value; a reply cut short is "not all in yet" to both, never an error or a
/// reply; `check`, `check_items` and `spans` (the hot path) agree with the value; and what we
/// wait on, redis-rs does not take for a whole reply. Returns where the replies end and why
/// the reading stopped. For the property tests and the fuzz target (`fuzz/`).
pub(crate) fn check_reader(data: &[u8]) -> (Vec<usize>, Stop) {
    let mut ends = Vec::new();
    let mut at = 0;
    let stop = loop {
        match (skip(data, at), parse(data, at)) {
            (Ok(None), Ok(None)) if at == data.len() => break Stop::End,
            (Ok(None), Ok(None)) => {
                // redis-rs reads no whole reply there either (it is lenient: what we refuse,
                // it may well read; what we wait on, it must not).
                if let Ok(theirs) = redis::parse_redis_value(&data[at..]) {
                    panic!("at {at}: we wait for more, redis-rs read {theirs:?}");
                }
                break Stop::More;
            }
            (Err(_), Err(_)) => break Stop::Refused,
            (Ok(Some(end)), Ok(Some((value, parsed)))) => {
                assert_eq!(end, parsed, "at {at}: skip and parse end apart");
                assert!(at < end && end <= data.len(), "at {at}: ends at {end}");
                match redis::parse_redis_value(&data[at..end]) {
                    Ok(theirs) => assert_eq!(value, theirs, "at {at}: redis-rs reads otherwise"),
                    Err(e) => panic!("at {at}: we read {value:?}, redis-rs refuses: {e}"),
                }
                check_cuts(data, at, end);
                check_hot_path(data, at, &value);
                ends.push(end);
                at = end;
            }
            (skipped, parsed) => {
                panic!("at {at}: skip says {skipped:?}, parse says {parsed:?}")
            }
        }
    };
    // `Replies` finds the same replies.
    let replies = Replies {
        bytes: data.to_vec(),
        ..Replies::default()
    };
    let found = replies.list(ends.len()).expect("the same replies");
    let starts = std::iter::once(0).chain(ends.iter().copied());
    assert!(found.iter().zip(starts).all(|(r, start)| r.at == start));
    (ends, stop)
}

#[cfg(feature = "fuzzing")]
impl crate::__fuzz::Resp {
    /// [`check_reader`], for `__fuzz::resp_reader`.
    pub(crate) fn check(data: &[u8]) {
        check_reader(data);
    }
}

/// The reply at `at` cut short anywhere (the first and last bytes each, and about 64 cuts
/// between) is "not all in yet" to both `skip` and `parse`.
fn check_cuts(data: &[u8], at: usize, end: usize) {
    let step = ((end - at) / 64).max(1);
    let cuts = (at..end).step_by(step).chain((at..end).rev().take(8));
    for cut in cuts.chain((at..end).take(8)) {
        let short = &data[..cut];
        let (skipped, parsed) = (skip(short, at), parse(short, at));
        assert!(
            matches!((&skipped, &parsed), (Ok(None), Ok(None))),
            "reply at {at}..{end} cut at {cut}: skip says {skipped:?}, parse says {parsed:?}"
        );
    }
}

/// `check`, `check_is`, `check_items` and `spans`, which read a reply without building it,
/// agree with its `value`.
fn check_hot_path(data: &[u8], at: usize, value: &Value) {
    let reply = Reply { buf: data, at };
    let code = |v: &Value| match v {
        Value::ServerError(e) => Some(e.code().to_owned()),
        _ => None,
    };
    let error = code(value);
    let code_of = |r: RedisResult<()>| r.err().map(|e| e.code().map(str::to_owned));
    assert_eq!(code_of(reply.check()), error.clone().map(Some));
    assert_eq!(code_of(reply.check_is(data[at])), error.clone().map(Some));
    let first = match value {
        Value::Array(items) => items.iter().find_map(code),
        _ => error.clone(),
    };
    assert_eq!(code_of(reply.check_items()), first.map(Some));
    match (value, reply.spans()) {
        (Value::Array(items), Ok(mut spans)) => {
            assert_eq!(spans.len(), items.len());
            for item in items {
                match (item, spans.next()) {
                    (Value::BulkString(bytes), Some(Ok(span))) => assert_eq!(&data[span], bytes),
                    (Value::BulkString(_), other) => panic!("a bulk string, spans say {other:?}"),
                    (_, Some(Err(_))) => break,
                    (item, other) => panic!("{item:?}, spans say {other:?}"),
                }
            }
            assert!(spans.next().is_none());
        }
        (Value::Nil, Ok(mut spans)) if data[at] == b'*' => assert!(spans.next().is_none()),
        (Value::ServerError(e), Err(err)) => assert_eq!(err.code(), Some(e.code())),
        (Value::Array(_), Err(err)) => panic!("an array, spans say {err}"),
        (_, Err(_)) => {}
        (value, Ok(spans)) => panic!("{value:?}, spans say {spans:?}"),
    }
}
