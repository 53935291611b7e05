//! Bytes captured from real nginx, lighttpd and Apache (FastCGI, SCGI, uwsgi) (see `tests/vectors/README.md`) decode
//! to exactly what an independent decoder (the capture script's) made of them: in one piece,
//! byte by byte, and split in two at every offset (at every offset of small files; for the
//! large ones at every offset of the first and last 4 KiB and every 251st in between).

mod common;

use std::path::Path;

fn vectors() -> Vec<(String, Vec<u8>, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let expect = std::fs::read_to_string(path.with_extension("expect")).unwrap();
            found.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
                expect.lines().map(str::to_owned).collect(),
            ));
        }
    }
    found.sort();
    assert!(found.len() >= 16, "vectors missing from {}", dir.display());
    found
}

fn decode(chunks: &[&[u8]]) -> Vec<String> {
    match protocol::detect(chunks.iter().find(|c| !c.is_empty()).unwrap()[0]) {
        Some(protocol::Protocol::FastCgi) => {
            let (lines, out) = common::fastcgi_feed(chunks).unwrap();
            assert!(
                out.is_empty(),
                "a web server's bytes needed no management reply"
            );
            lines
        }
        Some(protocol::Protocol::Scgi) => common::scgi_feed(chunks).unwrap(),
        Some(protocol::Protocol::Uwsgi) => common::uwsgi_feed(chunks).unwrap(),
        None => panic!("vector is neither FastCGI, SCGI nor uwsgi"),
    }
}

#[test]
fn vectors_decode_whole() {
    for (name, bytes, expect) in vectors() {
        assert_eq!(decode(&[&bytes]), expect, "{name}");
    }
}

#[test]
fn vectors_decode_byte_by_byte() {
    for (name, bytes, expect) in vectors() {
        let bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode(&bytes), expect, "{name}");
    }
}

#[test]
fn vectors_decode_split_anywhere() {
    for (name, bytes, expect) in vectors() {
        let n = bytes.len();
        let offsets = (0..=n).filter(|&i| n <= 16_384 || i < 4096 || i > n - 4096 || i % 251 == 0);
        for at in offsets {
            let (a, b) = bytes.split_at(at);
            assert_eq!(decode(&[a, b]), expect, "{name} split at {at}");
        }
    }
}

#[test]
fn keep_conn_vector_holds_two_requests_on_one_connection() {
    let (_, bytes, _) = vectors()
        .into_iter()
        .find(|(n, _, _)| n == "nginx-fcgi-keepconn.bin")
        .unwrap();
    let lines = decode(&[&bytes]);
    let requests: Vec<_> = lines.iter().filter(|l| l.starts_with("request ")).collect();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|l| l.contains("keep_conn=1")));
}

/// One captured connection's bytes.
fn vector(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(name),
    )
    .unwrap()
}

/// Decodes a whole uwsgi connection: its head and its body.
fn uwsgi_request(name: &str) -> (protocol::RequestHead, Vec<u8>) {
    use protocol::uwsgi::{Decoder, Event};
    let bytes = vector(name);
    let mut dec = Decoder::new(protocol::Limits::default());
    let mut input = &bytes[..];
    let (mut head, mut body) = (None, Vec::new());
    while !dec.is_done() {
        let d = dec.decode(input).unwrap();
        input = &input[d.consumed..];
        match d.event.expect("the whole request is in the vector") {
            Event::Request { head: h } => head = Some(h),
            Event::Body(data) => body.extend_from_slice(data),
            Event::End => {}
        }
    }
    assert!(input.is_empty(), "{name}: bytes after the body");
    (head.unwrap(), body)
}

/// The 200 KiB body capture.sh and capture-uwsgi.sh send: bytes (i*31 + i>>8) & 0xff.
fn capture_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31) + (i >> 8)) as u8).collect()
}

fn all<'h>(head: &'h protocol::RequestHead, name: &[u8]) -> Vec<&'h [u8]> {
    head.iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn uwsgi_vectors_are_uwsgi() {
    let names: Vec<String> = vectors()
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| n.contains("-uwsgi-"))
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    for name in names {
        assert_eq!(
            protocol::detect(vector(&name)[0]),
            Some(protocol::Protocol::Uwsgi)
        );
    }
}

#[test]
fn nginx_uwsgi_get_repeats_a_header_as_two_vars() {
    let (head, body) = uwsgi_request("nginx-uwsgi-get.bin");
    assert_eq!(all(&head, b"HTTP_COOKIE"), [&b"a=1"[..], b"b=2"]);
    assert_eq!(head.get(b"HTTP_COOKIE"), Some(&b"a=1"[..]));
    // uwsgi_params: an empty CONTENT_LENGTH for a GET, the whole path as PATH_INFO, no
    // SCRIPT_NAME, HTTP_HOST from $host (no port).
    assert_eq!(head.get(b"CONTENT_LENGTH"), Some(&b""[..]));
    assert_eq!(head.get(b"PATH_INFO"), Some(&b"/app/hello"[..]));
    assert_eq!(head.get(b"REQUEST_URI"), Some(&b"/app/hello?x=1"[..]));
    assert_eq!(head.get(b"SCRIPT_NAME"), None);
    assert_eq!(all(&head, b"HTTP_HOST"), [&b"127.0.0.1"[..]]);
    assert!(body.is_empty());
}

#[test]
fn apache_uwsgi_get_merges_a_repeated_header_and_splits_script_name() {
    let (head, body) = uwsgi_request("apache-uwsgi-get.bin");
    assert_eq!(all(&head, b"HTTP_COOKIE"), [&b"a=1, b=2"[..]]);
    assert_eq!(head.get(b"CONTENT_LENGTH"), None);
    assert_eq!(head.get(b"SCRIPT_NAME"), Some(&b"/get"[..]));
    assert_eq!(head.get(b"PATH_INFO"), Some(&b"/app/hello"[..]));
    assert_eq!(head.get(b"REQUEST_URI"), Some(&b"/get/app/hello?x=1"[..]));
    assert!(body.is_empty());
}

#[test]
fn uwsgi_posts_carry_their_whole_body() {
    for name in ["nginx-uwsgi-post.bin", "apache-uwsgi-post.bin"] {
        let (head, body) = uwsgi_request(name);
        assert_eq!(head.get(b"REQUEST_METHOD"), Some(&b"POST"[..]), "{name}");
        assert_eq!(head.content_length(), Some(Ok(204_800)), "{name}");
        assert_eq!(body, capture_body(204_800), "{name}");
    }
}

#[test]
fn nginx_uwsgi_chunked_body_arrives_with_a_content_length() {
    // Buffered (the default) or not (`uwsgi_request_buffering off`), nginx reads a chunked
    // body whole, sends its length as CONTENT_LENGTH and still passes the Transfer-Encoding.
    for name in [
        "nginx-uwsgi-chunked.bin",
        "nginx-uwsgi-chunked-unbuffered.bin",
    ] {
        let (head, body) = uwsgi_request(name);
        assert_eq!(head.content_length(), Some(Ok(5000)), "{name}");
        assert_eq!(
            head.get(b"HTTP_TRANSFER_ENCODING"),
            Some(&b"chunked"[..]),
            "{name}"
        );
        assert_eq!(body, capture_body(5000), "{name}");
    }
}

#[test]
fn uwsgi_big_vars_fit_the_limits_and_lower_limits_refuse_them() {
    for name in ["nginx-uwsgi-bigparams.bin", "apache-uwsgi-bigparams.bin"] {
        let (head, _) = uwsgi_request(name);
        let big: Vec<_> = head
            .iter()
            .filter(|(n, _)| n.starts_with(b"HTTP_X_BIG_"))
            .collect();
        assert_eq!(big.len(), 8, "{name}");
        assert!(big.iter().all(|(_, v)| v.len() == 7500), "{name}");
        let bytes = vector(name);
        let datasize = usize::from(u16::from_le_bytes([bytes[1], bytes[2]]));
        assert!(datasize > 60_000, "{name}: {datasize}");
        let limits = protocol::Limits {
            max_params_bytes: datasize - 1,
            ..protocol::Limits::default()
        };
        assert_eq!(
            protocol::uwsgi::parse_header(&bytes[..4], &limits),
            Err(protocol::DecodeError::ParamsTooLarge {
                limit: datasize - 1
            }),
            "{name}"
        );
        let limits = protocol::Limits {
            max_params_pairs: head.len() - 1,
            ..protocol::Limits::default()
        };
        assert_eq!(
            protocol::uwsgi::parse_header(&bytes, &limits),
            Err(protocol::DecodeError::TooManyParams {
                limit: head.len() - 1
            }),
            "{name}"
        );
    }
}
