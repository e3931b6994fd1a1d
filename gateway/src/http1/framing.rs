//! How an HTTP/1.1 response body is delimited (RFC 9112 §6.3), and the
//! decoder that takes frames off the front of a read buffer: no socket, so
//! every framing rule is tested on bytes alone (below, and through the
//! upstream connection in [`super::client`]).

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Frame;

use super::codec::{MAX_HEAD, MAX_HEADERS, invalid};

/// How the response body is delimited, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    /// Chunked: where in the chunk stream we are.
    Chunked(Chunk),
    /// Read until the upstream closes (no length, no chunking).
    Close,
    /// Read to its end.
    Done,
}

/// Where in a chunked body the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: the bytes still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers or the final CRLF.
    Trailers,
}

// === impl Framing ===

impl Framing {
    /// The framing of a body: chunked (as the final coding), a length, or
    /// to the connection's end.
    pub fn of(chunked: Option<bool>, length: Option<u64>) -> Self {
        match (chunked, length) {
            (Some(true), _) => Self::Chunked(Chunk::Size),
            (Some(false), _) | (None, None) => Self::Close,
            (None, Some(0)) => Self::Done,
            (None, Some(n)) => Self::Length(n),
        }
    }

    /// Takes the next frame off the front of `buf`: data, or trailers at
    /// the end of a chunked body. `None` when more bytes are needed (or,
    /// once [`Framing::Done`], at the end). An error is a body that cannot
    /// be framed: the connection is not to be used again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame<Bytes>>> {
        loop {
            match *self {
                Self::Done => return Ok(None),
                Self::Close if buf.is_empty() => return Ok(None),
                Self::Close => return Ok(Some(Frame::data(buf.split().freeze()))),
                Self::Length(left) | Self::Chunked(Chunk::Data(left)) => {
                    return Ok(self.data(buf, left));
                }
                Self::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = Self::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(invalid("bad chunk size")),
                },
                Self::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Self::Chunked(Chunk::Size);
                }
                Self::Chunked(Chunk::Trailers) => return self.trailers(buf),
            }
        }
    }

    /// Up to `left` bytes of a length-delimited body or of a chunk.
    fn data(&mut self, buf: &mut BytesMut, left: u64) -> Option<Frame<Bytes>> {
        if buf.is_empty() {
            return None;
        }
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let data = buf.split_to(n).freeze();
        let left = left - n as u64;
        *self = match (*self, left) {
            (Self::Length(_), 0) => Self::Done,
            (Self::Length(_), _) => Self::Length(left),
            (_, 0) => Self::Chunked(Chunk::DataEnd),
            _ => Self::Chunked(Chunk::Data(left)),
        };
        Some(Frame::data(data))
    }

    /// The trailer section after the last chunk (often just its CRLF).
    fn trailers(&mut self, buf: &mut BytesMut) -> io::Result<Option<Frame<Bytes>>> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (used, trailers) = match httparse::parse_headers(buf, &mut raw) {
            Ok(httparse::Status::Complete((used, fields))) => {
                let mut trailers = HeaderMap::new();
                for f in fields {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(f.name.as_bytes()),
                        HeaderValue::from_bytes(f.value),
                    ) {
                        trailers.append(n, v);
                    }
                }
                (used, trailers)
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(invalid("trailers too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(invalid("malformed trailers")),
        };
        buf.advance(used);
        *self = Self::Done;
        Ok((!trailers.is_empty()).then(|| Frame::trailers(trailers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to a decoder `step` bytes at a time, as reads would
    /// deliver it; the data and trailers it gave, and where it stopped.
    fn feed(
        mut framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> io::Result<(Vec<u8>, HeaderMap, Framing)> {
        let (mut data, mut trailers) = (Vec::new(), HeaderMap::new());
        let mut buf = BytesMut::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(frame) = framing.decode(&mut buf)? {
                match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(frame) => trailers = frame.into_trailers().expect("trailers"),
                }
            }
        }
        Ok((data, trailers, framing))
    }

    #[test]
    fn a_length_delimited_body_ends_at_its_length_and_leaves_the_rest() {
        let mut framing = Framing::of(None, Some(5));
        let mut buf = BytesMut::from(&b"helloHTTP/1.1 200"[..]);
        let frame = framing.decode(&mut buf).expect("framed").expect("data");
        assert_eq!(frame.into_data().expect("data"), "hello");
        assert_eq!(framing, Framing::Done);
        assert_eq!(&buf[..], b"HTTP/1.1 200", "the next answer is not body");
        assert!(framing.decode(&mut buf).expect("done").is_none());
        assert_eq!(Framing::of(None, Some(0)), Framing::Done);
        assert_eq!(Framing::of(None, None), Framing::Close);
    }

    #[test]
    fn a_chunked_body_decodes_the_same_whatever_the_reads() {
        let wire =
            b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers, end) =
                feed(Framing::of(Some(true), None), wire, step).expect("framed");
            assert_eq!(data, b"hello world", "reads of {step}");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-t"], "1");
            assert_eq!(end, Framing::Done);
        }
        let (data, trailers, end) =
            feed(Framing::of(Some(true), None), b"3\r\nabc\r\n0\r\n\r\n", 1).expect("framed");
        assert_eq!(
            (data, trailers.len(), end),
            (b"abc".to_vec(), 0, Framing::Done)
        );
    }

    #[test]
    fn bodies_that_cannot_be_framed_are_errors() {
        for wire in [
            &b"zz\r\nabc\r\n0\r\n\r\n"[..],
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
            b"ffffffffffffffffffff\r\n",
        ] {
            let err = feed(Framing::of(Some(true), None), wire, 1).expect_err("unframed");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{wire:?}");
        }
        let mut huge = b"0\r\nx: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        let err = feed(Framing::of(Some(true), None), &huge, 4096).expect_err("too large");
        assert_eq!(err.to_string(), "trailers too large");
    }

    #[test]
    fn a_body_to_the_connections_end_is_every_byte_read() {
        let (data, _, end) = feed(Framing::Close, b"all of it", 4).expect("framed");
        assert_eq!((data, end), (b"all of it".to_vec(), Framing::Close));
    }
}
