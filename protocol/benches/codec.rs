//! Codec speed on the paths every request takes: decoding a request head as nginx sends it,
//! decoding a large request body, and encoding a large response body.
//!
//!     cargo bench -p wsgi-gateway-protocol -j1 -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::fastcgi::{self, encode, Config, Connection, Event};
use protocol::{scgi, uwsgi, Limits};

/// GET /app/hello?x=1 from nginx: BEGIN_REQUEST, one PARAMS record of 24 params, the empty
/// PARAMS record and the empty STDIN record.
const NGINX_FCGI_GET: &[u8] = include_bytes!("../tests/vectors/nginx-fcgi-get.bin");
/// POST /app/form?z=3 from nginx over SCGI, with an 11-byte body.
const NGINX_SCGI_POST: &[u8] = include_bytes!("../tests/vectors/nginx-scgi-post.bin");
/// POST /app/upload?kind=blob from nginx over uwsgi: a 524-byte packet of 19 vars, then the
/// 200 KiB body (not read by the head benchmark).
const NGINX_UWSGI_POST: &[u8] = include_bytes!("../tests/vectors/nginx-uwsgi-post.bin");

const BODY_LEN: usize = 1 << 20;
/// The STDIN record size nginx uses.
const STDIN_RECORD: usize = 32 << 10;

/// Decodes one FastCGI connection's bytes up to its first request head.
fn decode_fastcgi_head(wire: &[u8], out: &mut Vec<u8>) -> protocol::RequestHead {
    let mut conn = Connection::new(Config::default());
    let mut input = wire;
    loop {
        let d = conn.decode(input, out).unwrap();
        if let Some(Event::Request { head, .. }) = d.event {
            return head;
        }
        assert!(d.consumed > 0, "no request head in the input");
        input = &input[d.consumed..];
    }
}

/// Decodes a whole FastCGI request and returns the number of body bytes seen; each piece is
/// also passed to `sink`.
fn decode_fastcgi_body(wire: &[u8], out: &mut Vec<u8>, mut sink: impl FnMut(&[u8])) -> usize {
    let mut conn = Connection::new(Config::default());
    let mut input = wire;
    let mut body = 0;
    loop {
        let d = conn.decode(input, out).unwrap();
        input = &input[d.consumed..];
        match d.event {
            Some(Event::Stdin { data, .. }) => {
                body += data.len();
                sink(black_box(data));
            }
            Some(Event::StdinEnd { .. }) => return body,
            Some(_) => {}
            None => assert!(d.consumed > 0, "input ended before STDIN did"),
        }
    }
}

fn body() -> Vec<u8> {
    (0..BODY_LEN as u32).map(|i| (i * 31 + 7) as u8).collect()
}

fn fastcgi(c: &mut Criterion) {
    let mut group = c.benchmark_group("fastcgi");
    let mut out = Vec::new();

    let head = decode_fastcgi_head(NGINX_FCGI_GET, &mut out);
    assert_eq!(head.len(), 24);
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_head_nginx_get", |b| {
        b.iter(|| decode_fastcgi_head(black_box(NGINX_FCGI_GET), &mut out))
    });

    // The nginx head (without its empty STDIN record), then 1 MiB of STDIN in 32 KiB records.
    let body = body();
    let mut wire = NGINX_FCGI_GET[..NGINX_FCGI_GET.len() - fastcgi::HEADER_LEN].to_vec();
    for chunk in body.chunks(STDIN_RECORD) {
        encode::record(fastcgi::STDIN, 1, chunk, &mut wire);
    }
    encode::stream_end(fastcgi::STDIN, 1, &mut wire);
    assert_eq!(decode_fastcgi_body(&wire, &mut out, |_| {}), BODY_LEN);
    group.throughput(Throughput::Bytes(BODY_LEN as u64));
    // The decoder alone: body pieces are borrowed from the input, so this is per record.
    group.bench_function("decode_body_1MiB", |b| {
        b.iter(|| decode_fastcgi_body(black_box(&wire), &mut out, |_| {}))
    });
    // The decoder and the least a consumer does with the body: copy it out, here into a
    // buffer reused from one request to the next.
    let mut copied = Vec::with_capacity(BODY_LEN);
    group.bench_function("decode_body_1MiB_copied", |b| {
        b.iter(|| {
            copied.clear();
            decode_fastcgi_body(black_box(&wire), &mut out, |data| {
                copied.extend_from_slice(data)
            })
        })
    });
    // (Empty when a filter left this case out.)
    assert!(copied.is_empty() || copied == body);

    // Into a buffer reused from one response to the next, as a connection's write buffer is.
    let mut response = Vec::new();
    group.bench_function("encode_stdout_1MiB", |b| {
        b.iter(|| {
            response.clear();
            encode::stdout(1, black_box(&body), &mut response);
            black_box(response.len())
        })
    });
    group.finish();
    assert!(out.is_empty(), "no management replies expected");
}

fn scgi(c: &mut Criterion) {
    let mut group = c.benchmark_group("scgi");
    let decode_head = |wire: &[u8]| {
        let mut dec = scgi::Decoder::new(Limits::default());
        match dec.decode(wire).unwrap().event {
            Some(scgi::Event::Request { head }) => head,
            other => panic!("expected a request head, got {other:?}"),
        }
    };
    assert_eq!(
        decode_head(NGINX_SCGI_POST).get(b"REQUEST_METHOD"),
        Some(&b"POST"[..])
    );
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_head_nginx_post", |b| {
        b.iter(|| decode_head(black_box(NGINX_SCGI_POST)))
    });
    group.finish();
}

fn uwsgi(c: &mut Criterion) {
    let mut group = c.benchmark_group("uwsgi");
    let decode_head = |wire: &[u8]| {
        let mut dec = uwsgi::Decoder::new(Limits::default());
        match dec.decode(wire).unwrap().event {
            Some(uwsgi::Event::Request { head }) => head,
            other => panic!("expected a request head, got {other:?}"),
        }
    };
    assert_eq!(decode_head(NGINX_UWSGI_POST).len(), 19);
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_head_nginx_post", |b| {
        b.iter(|| decode_head(black_box(NGINX_UWSGI_POST)))
    });
    group.finish();
}

criterion_group!(benches, fastcgi, scgi, uwsgi);
criterion_main!(benches);
