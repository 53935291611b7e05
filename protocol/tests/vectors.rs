//! Bytes captured from real nginx, lighttpd and Apache (see `tests/vectors/README.md`) decode
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
    assert!(found.len() >= 8, "vectors missing from {}", dir.display());
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
