use super::check::{check_reader, Stop};
use super::*;

/// How lengths were read before `counted` (but down to `i64::MIN`, as Redis sends
/// integers): the reference it is checked against.
fn number_of(line: &[u8]) -> RedisResult<i64> {
    let malformed = || broken("a malformed reply from Redis");
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(malformed());
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(malformed());
        }
        let d = i64::from(d - b'0');
        n = n
            .checked_mul(10)
            .and_then(|n| {
                if negative {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })
            .ok_or_else(malformed)?;
    }
    Ok(n)
}

#[test]
fn digits() {
    for n in [0, 7, 10, 1_800_000, u64::MAX] {
        assert_eq!(Digits::of(n).as_bytes(), n.to_string().as_bytes());
    }
}

#[test]
fn encodes_as_redis_rs_does() {
    let mut ours = Vec::new();
    encode(&mut ours, &[b"HGETALL", b"k"]);
    encode(&mut ours, &[b"PEXPIRE", b"k", b"1000"]);
    let long = vec![b'x'; 1234];
    encode(&mut ours, &[b"GET", &long, b""]);
    let commands: [&[&[u8]]; 3] = [
        &[b"HGETALL", b"k"],
        &[b"PEXPIRE", b"k", b"1000"],
        &[b"GET", &long, b""],
    ];
    assert!(ours.len() <= commands.iter().map(|c| encoded_len(c)).sum::<usize>());
    // `pack` writes the same bytes, into a buffer that never had to grow.
    let packed = pack(&commands);
    assert_eq!(packed, ours);
    assert_eq!(
        packed.capacity(),
        commands.iter().map(|c| encoded_len(c)).sum::<usize>()
    );
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL")
        .arg("k")
        .cmd("PEXPIRE")
        .arg("k")
        .arg(1000)
        .cmd("GET")
        .arg(&long)
        .arg("");
    assert_eq!(ours, pipe.get_packed_pipeline());
}

#[test]
fn every_length_encodes_as_redis_rs_does() {
    for len in (0..=120).chain([999, 1000, 65_536]) {
        let arg = vec![b'x'; len];
        let mut ours = Vec::new();
        encode(&mut ours, &[b"SET", &arg]);
        assert_eq!(ours, redis::cmd("SET").arg(&arg).get_packed_command());
    }
}

#[test]
fn checks_find_errors_only() {
    let replies =
        Replies::of(b"+QUEUED\r\n*2\r\n:1\r\n:0\r\n*2\r\n:1\r\n-OOM no\r\n-EXECABORT x\r\n");
    let [queued, exec, failed, aborted] = replies.split().unwrap();
    assert!(queued.check().is_ok());
    assert!(exec.check_items().is_ok());
    // The array itself is no error; one of its items is.
    assert!(failed.check().is_ok());
    assert_eq!(failed.check_items().unwrap_err().code(), Some("OOM"));
    assert_eq!(aborted.check().unwrap_err().code(), Some("EXECABORT"));
    assert_eq!(aborted.check_items().unwrap_err().code(), Some("EXECABORT"));
}

#[test]
fn parses_what_redis_sends() {
    let all = b"*2\r\n$1\r\na\r\n$-1\r\n:5\r\n+OK\r\n*-1\r\n-NOSCRIPT No matching script\r\n";
    let (v, at) = parse(all, 0).unwrap().unwrap();
    assert_eq!(
        v,
        Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Nil])
    );
    let (v, at) = parse(all, at).unwrap().unwrap();
    assert_eq!(v, Value::Int(5));
    let (v, at) = parse(all, at).unwrap().unwrap();
    assert_eq!(v, Value::Okay);
    let (v, at) = parse(all, at).unwrap().unwrap();
    assert_eq!(v, Value::Nil);
    let (v, at) = parse(all, at).unwrap().unwrap();
    assert_eq!(v.extract_error().unwrap_err().code(), Some("NOSCRIPT"));
    assert_eq!(at, all.len());
    // Any cut short of the end is "not yet", never a wrong value.
    for cut in 0..all.len() {
        let mut at = 0;
        while let Ok(Some((_, end))) = parse(&all[..cut], at) {
            at = end;
        }
        assert!(at <= cut);
    }
    assert!(parse(b"?x\r\n", 0).is_err());
    // `skip` finds the same ends as `parse`, building nothing.
    let mut at = 0;
    while let Some((_, end)) = parse(all, at).unwrap() {
        assert_eq!(skip(all, at).unwrap(), Some(end));
        at = end;
    }
    for cut in 0..all.len() {
        let (mut p, mut k) = (0, 0);
        while let Ok(Some((_, end))) = parse(&all[..cut], p) {
            p = end;
        }
        while let Ok(Some(end)) = skip(&all[..cut], k) {
            k = end;
        }
        assert_eq!(p, k, "cut at {cut}");
    }
    assert!(skip(b"?x\r\n", 0).is_err());
    assert_eq!(counted(b":-1\r\n", 0).unwrap(), Some((-1, 5)));
    assert_eq!(
        counted(b":9223372036854775807\r\n", 0).unwrap(),
        Some((i64::MAX, 22))
    );
    assert_eq!(
        counted(b":-9223372036854775808\r\n", 0).unwrap(),
        Some((i64::MIN, 23))
    );
    for bad in [
        &b":\r\n"[..],
        b":-\r\n",
        b":1x\r\n",
        b":99999999999999999999\r\n",
        b":-9223372036854775809\r\n",
    ] {
        assert!(counted(bad, 0).is_err(), "{bad:?}");
    }
}

#[test]
fn counts_as_the_reference_does() {
    // Every line of up to 6 bytes over digits, a sign, line ends and another byte, and
    // the limits of an `i64`: the same number and end, or an error, as before; a line
    // that is not all in is never a number.
    let alphabet = b"07-\r\nx";
    let mut lines: Vec<Vec<u8>> = vec![b"$".to_vec()];
    for _ in 0..6 {
        let longer: Vec<Vec<u8>> = lines
            .iter()
            .filter(|l| l.len() == lines.last().map_or(0, Vec::len))
            .flat_map(|l| alphabet.iter().map(move |&b| [&l[..], &[b]].concat()))
            .collect();
        lines.extend(longer);
    }
    for edge in [
        "9223372036854775807",
        "-9223372036854775807",
        "-9223372036854775808",
    ] {
        lines.push(format!("${edge}\r\n").into_bytes());
    }
    lines.push(format!("${}\r\n", "1".repeat(20)).into_bytes());
    for l in &lines {
        let before = line(l, 0).map(|(_, text, next)| number_of(text).map(|n| (n, next)));
        match (before, counted(l, 0)) {
            (Some(Ok(old)), new) => assert_eq!(new.ok().flatten(), Some(old), "{l:?}"),
            (Some(Err(_)), new) => assert!(new.is_err(), "{l:?}"),
            (None, new) => assert!(!matches!(new, Ok(Some(_))), "{l:?}"),
        }
    }
    assert!(lines.len() > 50_000);
}

#[test]
fn reads_a_hash_in_place() {
    let bytes = b"*4\r\n$1\r\na\r\n$0\r\n\r\n$2\r\nbc\r\n$1\r\nd\r\n:1\r\n";
    let mut known = Replies::of(bytes);
    known.ended(skip(bytes, 0).unwrap().unwrap());
    known.ended(bytes.len());
    for replies in [Replies::of(bytes), known] {
        let [hash, expired] = replies.split().unwrap();
        assert_eq!(expired.value().unwrap(), Value::Int(1));
        let spans = hash.spans().unwrap();
        assert_eq!(spans.len(), 4);
        let items: Vec<_> = spans.map(Result::unwrap).collect();
        let text = replies.into_text().unwrap();
        let items: Vec<&str> = items.into_iter().map(|r| &text[r]).collect();
        assert_eq!(items, ["a", "", "bc", "d"]);
    }
    // Fewer replies than asked for: an error, never a wrong split.
    assert!(Replies::of(b"*0\r\n").split::<2>().is_err());
    // Nil and empty arrays have no items; an error reply is the error; other replies and
    // items are errors too, and stop the items.
    let one = Replies::of;
    for empty in [&b"*-1\r\n"[..], b"*0\r\n"] {
        let empty = one(empty);
        let [r] = empty.split().unwrap();
        assert_eq!(r.spans().unwrap().count(), 0);
    }
    let error = one(b"-WRONGTYPE Operation\r\n");
    let [r] = error.split().unwrap();
    assert_eq!(r.spans().unwrap_err().code(), Some("WRONGTYPE"));
    let int = one(b":3\r\n");
    let [r] = int.split().unwrap();
    assert!(r.spans().is_err());
    let mixed = one(b"*3\r\n$1\r\na\r\n:5\r\n$1\r\nb\r\n");
    let [r] = mixed.split().unwrap();
    let items: Vec<_> = r.spans().unwrap().collect();
    assert_eq!(items.len(), 2);
    assert!(items[1].is_err());
}
/// Our reader against redis-rs's parser, on replies as Redis sends them and on those
/// replies broken in every way we could think of.
mod against_redis_rs {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// A RESP2 reply, as Redis may send it.
    #[derive(Clone, Debug)]
    enum Resp {
        Nil,
        NilArray,
        Int(i64),
        Bulk(Vec<u8>),
        Simple(String),
        Error(String),
        Array(Vec<Resp>),
    }

    impl Resp {
        fn encode(&self, out: &mut Vec<u8>) {
            match self {
                Self::Nil => out.extend_from_slice(b"$-1\r\n"),
                Self::NilArray => out.extend_from_slice(b"*-1\r\n"),
                Self::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
                Self::Bulk(bytes) => {
                    out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
                    out.extend_from_slice(bytes);
                    out.extend_from_slice(b"\r\n");
                }
                Self::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
                Self::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
                Self::Array(items) => {
                    out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                    for item in items {
                        item.encode(out);
                    }
                }
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.encode(&mut out);
            out
        }

        /// Whether `value` is this reply.
        fn is(&self, value: &Value) -> bool {
            match (self, value) {
                (Self::Nil | Self::NilArray, Value::Nil) => true,
                (Self::Int(n), Value::Int(v)) => n == v,
                (Self::Bulk(b), Value::BulkString(v)) => b == v,
                (Self::Simple(s), Value::Okay) => s == "OK",
                (Self::Simple(s), Value::SimpleString(v)) => s != "OK" && s == v,
                (Self::Error(s), Value::ServerError(e)) => {
                    let (code, detail) = match s.split_once(' ') {
                        Some((code, detail)) => (code, Some(detail)),
                        None => (&s[..], None),
                    };
                    e.code() == code && e.details() == detail
                }
                (Self::Array(items), Value::Array(values)) => {
                    items.len() == values.len() && items.iter().zip(values).all(|(i, v)| i.is(v))
                }
                _ => false,
            }
        }
    }

    /// Bytes, with line ends and digits more often than chance.
    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![any::<u8>(), select(b"\r\n\r\n-+:$*0123456789 ".to_vec())]
    }

    fn leaf() -> impl Strategy<Value = Resp> {
        let int = prop_oneof![
            any::<i64>(),
            select(vec![0, -1, 1, i64::MIN, i64::MIN + 1, i64::MAX, 10, -10]),
        ];
        prop_oneof![
            Just(Resp::Nil),
            Just(Resp::NilArray),
            int.prop_map(Resp::Int),
            prop::collection::vec(byte(), 0..40).prop_map(Resp::Bulk),
            "[^\r\n]{0,20}".prop_map(Resp::Simple),
            Just(Resp::Simple("OK".into())),
            "[A-Z]{0,10}( [^\r\n]{0,20})?".prop_map(Resp::Error),
            Just(Resp::Error("ERR unknown command".into())),
            Just(Resp::Error("MOVED 3999 127.0.0.1:6381".into())),
        ]
    }

    /// Replies nested up to 5 levels (the top level counted), up to 6 items an array.
    fn reply() -> impl Strategy<Value = Resp> {
        leaf().prop_recursive(4, 48, 6, |inner| {
            prop::collection::vec(inner, 0..6).prop_map(Resp::Array)
        })
    }

    fn replies() -> impl Strategy<Value = Vec<Resp>> {
        prop::collection::vec(reply(), 1..4)
    }

    /// One way to break a reply.
    #[derive(Clone, Debug)]
    enum Mutation {
        Set(usize, u8),
        Insert(usize, u8),
        Delete(usize),
        Truncate(usize),
        /// Another type byte at the start of a line.
        Type(usize, u8),
        /// Another number on a line (a length or an integer).
        Number(usize, &'static str),
        /// A run of the same bytes (headers of nested arrays, say).
        Repeat(usize, &'static [u8], usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let at = any::<usize>();
        let numbers = vec![
            "-1",
            "-2",
            "-0",
            "0",
            "1",
            "2",
            "01",
            "100",
            "",
            "-",
            "x",
            "1x",
            " 1",
            "+1",
            "1 ",
            "0x10",
            "536870912",
            "536870913",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "99999999999999999999",
            "0000000000000000000001",
        ];
        let runs: Vec<&'static [u8]> = vec![b"*1\r\n", b"*2\r\n", b"*1\r\n:1\r\n", b"\r\n"];
        prop_oneof![
            (at, byte()).prop_map(|(i, b)| Mutation::Set(i, b)),
            (at, byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            at.prop_map(Mutation::Delete),
            at.prop_map(Mutation::Truncate),
            (at, select(b"+-:$*%~>_,#!=(|?x\r\n".to_vec())).prop_map(|(i, b)| Mutation::Type(i, b)),
            (at, select(numbers)).prop_map(|(i, n)| Mutation::Number(i, n)),
            (at, select(runs), 1usize..120).prop_map(|(i, r, n)| Mutation::Repeat(i, r, n)),
        ]
    }

    fn mutate(buf: &mut Vec<u8>, m: &Mutation) {
        let len = buf.len();
        let starts: Vec<usize> = (0..len)
            .filter(|&i| i == 0 || buf[i - 1] == b'\n')
            .collect();
        let start = |i: usize| starts.get(i % starts.len().max(1)).copied();
        match *m {
            Mutation::Set(i, b) if len > 0 => buf[i % len] = b,
            Mutation::Insert(i, b) => buf.insert(i % (len + 1), b),
            Mutation::Delete(i) if len > 0 => drop(buf.remove(i % len)),
            Mutation::Truncate(i) => buf.truncate(i % (len + 1)),
            Mutation::Type(i, b) => {
                if let Some(s) = start(i) {
                    buf[s] = b;
                }
            }
            Mutation::Number(i, n) => {
                if let Some(s) = start(i) {
                    let end = buf[s..]
                        .iter()
                        .position(|&b| b == b'\r')
                        .map_or(len, |e| s + e);
                    buf.splice((s + 1).min(end)..end, n.bytes());
                }
            }
            Mutation::Repeat(i, run, n) => {
                let at = start(i).unwrap_or(0);
                buf.splice(at..at, run.iter().copied().cycle().take(run.len() * n));
            }
            _ => {}
        }
    }

    /// `arrays` arrays of one item around `leaf`.
    fn nested(arrays: usize, leaf: &[u8]) -> Vec<u8> {
        let mut out = b"*1\r\n".repeat(arrays);
        out.extend_from_slice(leaf);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn reads_what_redis_sends(replies in replies()) {
            let encoded: Vec<Vec<u8>> = replies.iter().map(Resp::bytes).collect();
            for (reply, bytes) in replies.iter().zip(&encoded) {
                prop_assert_eq!(skip(bytes, 0).unwrap(), Some(bytes.len()));
                let (ours, end) = parse(bytes, 0).unwrap().unwrap();
                prop_assert_eq!(end, bytes.len());
                let theirs = redis::parse_redis_value(bytes).unwrap();
                prop_assert_eq!(&ours, &theirs);
                prop_assert!(reply.is(&ours), "{:?} read as {:?}", reply, ours);
                // Every cut short of the end is "not all in yet", to both.
                for cut in 0..bytes.len() {
                    prop_assert!(matches!(skip(&bytes[..cut], 0), Ok(None)), "cut at {}", cut);
                    prop_assert!(matches!(parse(&bytes[..cut], 0), Ok(None)), "cut at {}", cut);
                }
            }
            // One after the other, split where each ends.
            let all = encoded.concat();
            let ends: Vec<usize> = encoded
                .iter()
                .scan(0, |end, bytes| {
                    *end += bytes.len();
                    Some(*end)
                })
                .collect();
            prop_assert_eq!(check_reader(&all), (ends.clone(), Stop::End));
            // And as they come in, in pieces: the reply cut short, where it starts among
            // the others, is "not all in yet".
            for cut in 0..all.len() {
                let start = ends.iter().copied().take_while(|&end| end <= cut).last();
                let start = start.unwrap_or(0);
                prop_assert!(matches!(skip(&all[..cut], start), Ok(None)), "cut at {}", cut);
                prop_assert!(matches!(parse(&all[..cut], start), Ok(None)), "cut at {}", cut);
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn refuses_or_agrees_on_broken_replies(
            replies in replies(),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            let mut bytes = replies.iter().flat_map(Resp::bytes).collect::<Vec<u8>>();
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            // Panics on any disagreement.
            check_reader(&bytes);
        }

        #[test]
        fn refuses_or_agrees_on_arbitrary_bytes(
            bytes in prop::collection::vec(byte(), 0..64),
        ) {
            check_reader(&bytes);
        }

        #[test]
        fn refuses_or_agrees_deep_in(
            arrays in 90usize..110,
            leaf in select(vec![&b":1\r\n"[..], b"*0\r\n", b"*-1\r\n", b"$1\r\nx\r\n", b"", b"+OK"]),
            mutations in prop::collection::vec(mutation(), 0..2),
        ) {
            let mut bytes = nested(arrays, leaf);
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            check_reader(&bytes);
        }
    }

    #[test]
    fn reads_and_refuses_as_found_against_redis_rs() {
        // The lowest integer, which `HINCRBY` answers when it gets there: refused before,
        // as if the stream were broken.
        let min = b":-9223372036854775808\r\n";
        assert_eq!(skip(min, 0).unwrap(), Some(min.len()));
        assert_eq!(
            parse(min, 0).unwrap(),
            Some((Value::Int(i64::MIN), min.len()))
        );
        assert_eq!(check_reader(min), (vec![min.len()], Stop::End));
        let below = b":-9223372036854775809\r\n";
        assert!(skip(below, 0).is_err() && parse(below, 0).is_err());
        // A line that is not UTF-8: redis-rs refuses it; `parse` read a status line with
        // U+FFFD in it, and `skip` took either for a reply.
        for bad in [
            &b"+\xff\r\n"[..],
            b"-ERR \xc3\r\n",
            b"*2\r\n:1\r\n+\xfe\r\n",
        ] {
            assert!(redis::parse_redis_value(bad).is_err(), "{bad:?}");
            assert!(skip(bad, 0).is_err(), "{bad:?}");
            assert!(parse(bad, 0).is_err(), "{bad:?}");
        }
        // Bytes that `skip` refused and `parse` waited on for more (a line end, or the CRLF
        // after a payload): now both refuse them.
        for early in [
            &b"\x00"[..],
            b"?",
            b"+a\rb",
            b":1x",
            b"$1\rx",
            b"$3\r\nabcX",
        ] {
            assert!(skip(early, 0).is_err(), "{early:?}");
            assert!(parse(early, 0).is_err(), "{early:?}");
        }
        // And the other way round: `parse` refused nesting too deep before the reply at
        // level 101 had begun, `skip` waited for it. Both wait now, as redis-rs does.
        let waiting = nested(100, b"");
        assert!(matches!(skip(&waiting, 0), Ok(None)));
        assert!(matches!(parse(&waiting, 0), Ok(None)));
    }

    #[test]
    fn nests_as_deep_as_redis_rs_does() {
        // 100 levels, the top one counted: 99 arrays around an integer, an empty array or
        // a nil one.
        for deepest in [
            nested(99, b":1\r\n"),
            nested(99, b"*0\r\n"),
            nested(99, b"*-1\r\n"),
        ] {
            assert_eq!(skip(&deepest, 0).unwrap(), Some(deepest.len()));
            let (ours, end) = parse(&deepest, 0).unwrap().unwrap();
            assert_eq!(end, deepest.len());
            assert_eq!(ours, redis::parse_redis_value(&deepest).unwrap());
            assert_eq!(check_reader(&deepest), (vec![deepest.len()], Stop::End));
        }
        // 101: refused by both, once the reply at level 101 has begun (and not before).
        for deeper in [
            nested(100, b":1\r\n"),
            nested(100, b"*0\r\n"),
            nested(100, b"$"),
        ] {
            assert!(skip(&deeper, 0).is_err());
            assert!(parse(&deeper, 0).is_err());
            assert!(redis::parse_redis_value(&deeper).is_err());
            assert_eq!(check_reader(&deeper), (vec![], Stop::Refused));
        }
        let waiting = nested(100, b"");
        assert_eq!(check_reader(&waiting), (vec![], Stop::More));
        // Far deeper than any stack would take, read without recursion into it.
        let hostile = nested(1_000_000, b":1\r\n");
        assert_eq!(check_reader(&hostile), (vec![], Stop::Refused));
    }
}
