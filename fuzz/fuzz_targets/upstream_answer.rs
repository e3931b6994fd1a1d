//! The gateway's upstream HTTP/1.1 answer parser and body decoder
//! (`http1::client::Conn`), over a real loopback connection whose far end sends the
//! fuzz input and closes. Checks: no panic; a body never holds more bytes
//! than were sent; a connection is offered for reuse only after an answer
//! that ended on its framing (length or last chunk) with nothing after it.
#![no_main]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, uri::Authority, uri::PathAndQuery};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use switchyard_gateway::http1::client::{Conn, RequestHead, Reuse};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Notes that the connection was offered back.
struct Offered(Arc<Mutex<bool>>);

impl Reuse for Offered {
    fn reuse(self, _conn: Conn) {
        *self.0.lock().expect("flag") = true;
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
}

fn harness() -> &'static Harness {
    static H: std::sync::OnceLock<Harness> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind loopback");
        Harness { rt, listener }
    })
}

fuzz_target!(|bytes: &[u8]| {
    let (method, answer) = match bytes.split_first() {
        Some((m, rest)) => (
            if m & 1 == 0 {
                Method::GET
            } else {
                Method::HEAD
            },
            rest,
        ),
        None => return,
    };
    let h = harness();
    let addr = h.listener.local_addr().expect("addr");
    h.rt.block_on(async {
        let server = async {
            let (mut s, _) = h.listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let _ = s.read(&mut request).await;
            let _ = s.write_all(answer).await;
            let _ = s.shutdown().await;
            // Held open until the client is done, so its reads see the
            // close only as the end of what was sent.
            s
        };
        let client = async {
            let io = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let authority = Authority::from_static("upstream.test");
            let path = PathAndQuery::from_static("/");
            let headers = HeaderMap::new();
            let head = RequestHead {
                method: &method,
                path: &path,
                headers: &headers,
                extra: &[],
                authority: &authority,
                raw_answer: answer.first().is_some_and(|b| b & 2 == 0),
            };
            let offered = Arc::new(Mutex::new(false));
            let Ok(res) = Conn::new(io)
                .request(head, &Bytes::new(), Offered(offered.clone()))
                .await
            else {
                return;
            };
            let status = res.status();
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(2), res.into_body().collect())
                    .await
                    .expect("a body ends when its connection does");
            let whole = read.is_ok();
            if let Ok(body) = read {
                let body = body.to_bytes();
                assert!(body.len() <= answer.len(), "more body than bytes sent");
                if method == Method::HEAD || status == 204 || status == 304 {
                    assert!(body.is_empty(), "{status} with a body");
                }
            }
            if *offered.lock().expect("flag") {
                assert!(whole, "a connection offered back after a broken body");
            }
        };
        let (_server, ()) = tokio::join!(server, client);
    });
});
