//! Raw HTTP/1.1 on a socket: answers read byte by byte as a client sees
//! them, for tests that send what no well-behaved client would.

use std::time::Duration;

/// One answer read off a raw connection: status, fields, body (by its
/// length, chunked, or to the close).
pub struct Answer {
    pub status: u16,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent {} times", all.len());
        all.first().copied()
    }
}

/// Reads one answer from `conn`, `buf` holding what was read past the
/// last one. `head_only`: the answer to a HEAD (no body whatever it says).
pub async fn read_answer(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> Answer {
    use tokio::io::AsyncReadExt;
    async fn more(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        buf.extend_from_slice(&chunk[..n]);
        n
    }
    let (status, fields, len) = loop {
        let mut raw = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut raw);
        if let httparse::Status::Complete(len) = res.parse(buf).expect("a well-formed head") {
            let fields = res
                .headers
                .iter()
                .map(|h| {
                    let value = std::str::from_utf8(h.value).expect("text");
                    (h.name.to_string(), value.to_string())
                })
                .collect::<Vec<_>>();
            break (res.code.expect("status"), fields, len);
        }
        assert!(more(conn, buf).await > 0, "closed before the head ended");
    };
    buf.drain(..len);
    let mut answer = Answer {
        status,
        fields,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 {
        return answer;
    }
    if let Some(n) = answer.one("content-length") {
        let n: usize = n.parse().expect("length");
        while buf.len() < n {
            assert!(more(conn, buf).await > 0, "closed inside the body");
        }
        answer.body = buf.drain(..n).collect();
    } else if answer.one("transfer-encoding") == Some("chunked") {
        loop {
            let (at, size) = loop {
                if let Ok(httparse::Status::Complete(sized)) = httparse::parse_chunk_size(buf) {
                    break sized;
                }
                assert!(more(conn, buf).await > 0, "closed inside a chunk size");
            };
            let size = usize::try_from(size).expect("size");
            while buf.len() < at + size + 2 {
                assert!(more(conn, buf).await > 0, "closed inside a chunk");
            }
            answer.body.extend_from_slice(&buf[at..at + size]);
            assert_eq!(&buf[at + size..at + size + 2], b"\r\n", "chunk end");
            buf.drain(..at + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while more(conn, buf).await > 0 {}
        answer.body = std::mem::take(buf);
    }
    answer
}

/// Whether the gateway closed `conn` (a read sees the end in time).
pub async fn closed(conn: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), conn.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}
