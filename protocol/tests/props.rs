//! Property tests: encode→decode round trips, re-chunking invariance, and arbitrary input, for
//! FastCGI, SCGI and uwsgi.

mod common;

use proptest::collection::vec;
use proptest::prelude::*;
use protocol::fastcgi::{self, encode, params};
use protocol::{scgi, uwsgi, Limits};

fn name() -> impl Strategy<Value = Vec<u8>> {
    vec(1u8..=255, 1..200)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..20), vec(any::<u8>(), 100..400)]
}

/// Splits `data` at the given (sorted, deduplicated) offsets.
fn split_at<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut last = 0;
    for c in cuts {
        pieces.push(&data[last..c]);
        last = c;
    }
    pieces.push(&data[last..]);
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn stream_records_round_trip(kind in 1u8..=11, id in any::<u16>(), data in vec(any::<u8>(), 0..150_000)) {
        let mut wire = Vec::new();
        encode::stream(kind, id, &data, &mut wire);
        let mut pos = 0;
        let mut back = Vec::new();
        while pos < wire.len() {
            let (rec, used) = fastcgi::parse_record(&wire[pos..]).unwrap().unwrap();
            prop_assert_eq!(rec.header.record_type, kind);
            prop_assert_eq!(rec.header.request_id, id);
            prop_assert_eq!(used % 8, 0);
            back.extend_from_slice(rec.content);
            pos += used;
        }
        prop_assert_eq!(back, data);
    }

    #[test]
    fn params_round_trip(pairs in vec((name(), value()), 0..40)) {
        let mut block = Vec::new();
        for (n, v) in &pairs {
            params::encode_pair(n, v, &mut block);
        }
        let head = params::decode_params(block, &Limits::default()).unwrap();
        let back: Vec<(Vec<u8>, Vec<u8>)> = head.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(back, pairs);
    }

    #[test]
    fn fastcgi_conversation_is_independent_of_chunking(
        pairs in vec((name(), value()), 0..20),
        body in vec(any::<u8>(), 0..70_000),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let mut wire = Vec::new();
        encode::begin_request(1, fastcgi::RESPONDER, fastcgi::KEEP_CONN, &mut wire);
        encode::params(1, pairs.iter().map(|(n, v)| (&n[..], &v[..])), &mut wire);
        encode::stream(fastcgi::STDIN, 1, &body, &mut wire);
        encode::stream_end(fastcgi::STDIN, 1, &mut wire);
        let whole = common::fastcgi_feed(&[&wire]).unwrap();
        prop_assert_eq!(whole.0.len(), pairs.len() + 2);
        let pieces = split_at(&wire, &cuts);
        prop_assert_eq!(common::fastcgi_feed(&pieces).unwrap(), whole);
    }

    #[test]
    fn scgi_request_round_trips_in_any_chunking(
        pairs in vec((vec(1u8..=255, 1..30), vec(1u8..=255, 0..50)), 0..20),
        body in vec(any::<u8>(), 0..5_000),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        // Names may repeat (nginx before 1.23 repeats a header); only CONTENT_LENGTH and SCGI
        // are the encoder's.
        let pairs: Vec<_> = pairs.into_iter().filter(|(n, _)| n != b"CONTENT_LENGTH" && n != b"SCGI").collect();
        let mut wire = Vec::new();
        scgi::encode_request(body.len() as u64, pairs.iter().map(|(n, v)| (&n[..], &v[..])), &mut wire);
        wire.extend_from_slice(&body);
        let whole = common::scgi_feed(&[&wire]).unwrap();
        prop_assert_eq!(whole.len(), pairs.len() + 2 + 2);
        prop_assert_eq!(common::scgi_feed(&split_at(&wire, &cuts)).unwrap(), whole);
    }

    #[test]
    fn uwsgi_vars_round_trip(
        pairs in vec((vec(any::<u8>(), 1..60), vec(any::<u8>(), 0..300)), 0..40),
        body_len in 0u64..10_000_000_000_000_000_000, // parse_decimal takes 19 digits
    ) {
        // Names may repeat (nginx repeats a header); only CONTENT_LENGTH is the encoder's.
        let pairs: Vec<_> = pairs.into_iter().filter(|(n, _)| n != b"CONTENT_LENGTH").collect();
        let mut wire = Vec::new();
        uwsgi::encode_request(body_len, pairs.iter().map(|(n, v)| (&n[..], &v[..])), &mut wire);
        let header = uwsgi::parse_packet_header(&wire).unwrap();
        prop_assert_eq!(usize::from(header.datasize) + uwsgi::HEADER_LEN, wire.len());
        let (head, used) = uwsgi::parse_header(&wire, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, wire.len());
        let back: Vec<(Vec<u8>, Vec<u8>)> = head.iter().skip(1).map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(back, pairs);
        prop_assert_eq!(head.content_length(), Some(Ok(body_len)));
    }

    #[test]
    fn uwsgi_request_round_trips_in_any_chunking(
        pairs in vec((vec(any::<u8>(), 1..30), vec(any::<u8>(), 0..50)), 0..20),
        body in vec(any::<u8>(), 0..5_000),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let pairs: Vec<_> = pairs.into_iter().filter(|(n, _)| n != b"CONTENT_LENGTH").collect();
        let mut wire = Vec::new();
        uwsgi::encode_request(body.len() as u64, pairs.iter().map(|(n, v)| (&n[..], &v[..])), &mut wire);
        wire.extend_from_slice(&body);
        let whole = common::uwsgi_feed(&[&wire]).unwrap();
        // The request line, CONTENT_LENGTH, the pairs and the body line.
        prop_assert_eq!(whole.len(), pairs.len() + 3);
        prop_assert_eq!(&whole[whole.len() - 1], &format!("stdin 0 {} {}", body.len(), common::sha256_hex(&body)));
        prop_assert_eq!(common::uwsgi_feed(&split_at(&wire, &cuts)).unwrap(), whole);
    }

    #[test]
    fn uwsgi_request_split_in_two_at_every_offset(
        pairs in vec((vec(any::<u8>(), 1..12), vec(any::<u8>(), 0..12)), 0..6),
        body in vec(any::<u8>(), 0..40),
    ) {
        let pairs: Vec<_> = pairs.into_iter().filter(|(n, _)| n != b"CONTENT_LENGTH").collect();
        let mut wire = Vec::new();
        uwsgi::encode_request(body.len() as u64, pairs.iter().map(|(n, v)| (&n[..], &v[..])), &mut wire);
        wire.extend_from_slice(&body);
        let whole = common::uwsgi_feed(&[&wire]).unwrap();
        for at in 0..=wire.len() {
            let (a, b) = wire.split_at(at);
            prop_assert_eq!(&common::uwsgi_feed(&[a, b]).unwrap(), &whole, "split at {}", at);
        }
    }

    #[test]
    fn uwsgi_garbage_gives_the_same_outcome_in_any_chunking(
        data in vec(any::<u8>(), 0..600),
        cuts in vec(any::<usize>(), 0..12),
        small in any::<bool>(),
    ) {
        // A plausible start (modifiers 0, a datasize within the data) so that the vars parser,
        // not only the header check, sees the garbage.
        let mut data = data;
        if data.len() >= 4 {
            let size = (data.len() - 4) as u16;
            data[0] = 0;
            data[1..3].copy_from_slice(&size.to_le_bytes());
            data[3] = 0;
        }
        let limits = if small {
            Limits { max_params_bytes: 64, max_params_pairs: 3, ..Limits::default() }
        } else {
            Limits::default()
        };
        let run = |chunks: &[&[u8]]| {
            let mut dec = uwsgi::Decoder::new(limits);
            let mut buf = Vec::new();
            let mut events = Vec::new();
            for chunk in chunks {
                buf.extend_from_slice(chunk);
                let mut start = 0;
                loop {
                    match dec.decode(&buf[start..]) {
                        Err(e) => return (events, Err(e)),
                        Ok(d) => {
                            assert!(d.consumed <= buf.len() - start);
                            if d.consumed == 0 && d.event.is_none() {
                                break;
                            }
                            start += d.consumed;
                            if let Some(uwsgi::Event::Request { head }) = d.event {
                                assert!(head.len() <= limits.max_params_pairs);
                                events.push(format!("{head:?}"));
                            }
                        }
                    }
                }
                buf.drain(..start);
            }
            (events, Ok(buf.len()))
        };
        prop_assert_eq!(run(&split_at(&data, &cuts)), run(&[&data]));
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_over_consume(data in vec(any::<u8>(), 0..2_000), fcgi_start in any::<bool>()) {
        let mut data = data;
        if fcgi_start && !data.is_empty() {
            data[0] = 1;
        }
        let mut conn = fastcgi::Connection::new(fastcgi::Config::default());
        let mut out = Vec::new();
        let mut input = &data[..];
        while let Ok(d) = conn.decode(input, &mut out) {
            prop_assert!(d.consumed <= input.len());
            if d.consumed == 0 && d.event.is_none() { break; }
            input = &input[d.consumed..];
        }
        let mut dec = scgi::Decoder::new(Limits::default());
        let mut input = &data[..];
        while let Ok(d) = dec.decode(input) {
            prop_assert!(d.consumed <= input.len());
            if d.consumed == 0 && d.event.is_none() { break; }
            input = &input[d.consumed..];
        }
        let mut dec = uwsgi::Decoder::new(Limits::default());
        let mut input = &data[..];
        while let Ok(d) = dec.decode(input) {
            prop_assert!(d.consumed <= input.len());
            if d.consumed == 0 && d.event.is_none() { break; }
            input = &input[d.consumed..];
        }
        let _ = params::decode_params(data.clone(), &Limits::default());
    }

    #[test]
    fn structured_garbage_never_panics(records in vec((1u8..=12, 0u16..4, vec(any::<u8>(), 0..64)), 0..30)) {
        let mut wire = Vec::new();
        for (kind, id, content) in &records {
            encode::record(*kind, *id, content, &mut wire);
        }
        let _ = common::fastcgi_feed(&[&wire]);
    }
}
