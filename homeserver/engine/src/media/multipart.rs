//! `multipart/mixed` (RFC 2046) as the federation content repository uses it:
//! exactly two parts, a JSON metadata object, then the media's bytes (or a
//! `Location` header naming where to get them).
//!
//! Both directions stream: the server frames a blob with a fixed prefix and
//! suffix around the store's byte stream, and [`MultipartReader`] reads the
//! small leading parts into memory but hands the media part back as a stream,
//! holding back only a delimiter's length of bytes at a time.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;

use super::blob::ByteStream;

/// Most bytes the leading JSON part and the part headers may take together.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A boundary no body will contain by accident (random, 32 characters).
pub fn new_boundary() -> String {
    crate::util::random_string(32)
}

/// The bytes before and after the media in a two-part response: the empty
/// metadata object, then the media part's headers; after it, the closing
/// delimiter.
pub fn frame(boundary: &str, content_type: &str, disposition: &str) -> (Bytes, Bytes) {
    let prefix = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n\
         --{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    );
    let suffix = format!("\r\n--{boundary}--\r\n");
    (Bytes::from(prefix), Bytes::from(suffix))
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let essence = params.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// One part's headers, names lowercased.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartHeaders(pub Vec<(String, String)>);

impl PartHeaders {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn parse(text: &[u8]) -> io::Result<Self> {
        let text = std::str::from_utf8(text).map_err(|_| invalid("part headers are not UTF-8"))?;
        let mut headers = Vec::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid("malformed part header"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        Ok(Self(headers))
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a `multipart/mixed` body part by part.
pub struct MultipartReader {
    body: ByteStream,
    buf: BytesMut,
    /// `\r\n--boundary`: what ends every part.
    delimiter: Vec<u8>,
}

impl MultipartReader {
    pub fn new(body: ByteStream, boundary: &str) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
        }
    }

    /// Reads one more chunk into the buffer; false at the end of the body.
    async fn fill(&mut self) -> io::Result<bool> {
        match self.body.next().await {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Buffers until `pattern` appears, then returns what came before it and
    /// drops the pattern itself.
    async fn take_until(&mut self, pattern: &[u8]) -> io::Result<Bytes> {
        loop {
            if let Some(at) = find(&self.buf, pattern) {
                let before = self.buf.split_to(at).freeze();
                self.buf.advance(pattern.len());
                return Ok(before);
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(invalid("multipart head too large"));
            }
            if !self.fill().await? {
                return Err(invalid("multipart body ended early"));
            }
        }
    }

    /// Skips the preamble and the first delimiter.
    async fn start(&mut self) -> io::Result<()> {
        // The first delimiter may open the body, without the leading CRLF.
        self.buf.extend_from_slice(b"\r\n");
        let delimiter = self.delimiter.clone();
        self.take_until(&delimiter).await?;
        Ok(())
    }

    /// Reads the headers of the next part (after a delimiter).
    async fn part_headers(&mut self) -> io::Result<PartHeaders> {
        // The delimiter line ends with CRLF (transport padding allowed);
        // `--` instead would close the body.
        let line = self.take_until(b"\r\n").await?;
        if line.trim_ascii().starts_with(b"--") {
            return Err(invalid("multipart body has too few parts"));
        }
        // A part without headers starts straight away with its blank line.
        if self.buf.starts_with(b"\r\n") {
            self.buf.advance(2);
            return Ok(PartHeaders::default());
        }
        let head = self.take_until(b"\r\n\r\n").await?;
        PartHeaders::parse(&head)
    }

    /// Reads the leading metadata part (JSON) and the media part's headers.
    /// The reader is then positioned at the media's first byte.
    pub async fn read_head(&mut self) -> io::Result<(serde_json::Value, PartHeaders)> {
        self.start().await?;
        let _json_headers = self.part_headers().await?;
        let delimiter = self.delimiter.clone();
        let json = self.take_until(&delimiter).await?;
        let metadata = serde_json::from_slice(&json)
            .map_err(|e| invalid(&format!("metadata part is not JSON: {e}")))?;
        let headers = self.part_headers().await?;
        Ok((metadata, headers))
    }

    /// The media part's bytes as a stream that ends at the next delimiter; a
    /// body that ends before it is an error (a truncated transfer).
    pub fn into_body(self) -> ByteStream {
        Box::pin(futures::stream::try_unfold(
            (self, false),
            |(mut r, done)| async move {
                if done {
                    return Ok(None);
                }
                loop {
                    if let Some(at) = find(&r.buf, &r.delimiter) {
                        let last = r.buf.split_to(at).freeze();
                        return Ok(Some((last, (r, true))));
                    }
                    // Everything but a possible delimiter prefix can go out.
                    let keep = r.delimiter.len() - 1;
                    if r.buf.len() > keep + 8 * 1024 {
                        let out = r.buf.split_to(r.buf.len() - keep).freeze();
                        return Ok(Some((out, (r, false))));
                    }
                    if !r.fill().await? {
                        return Err(invalid("multipart body ended before its closing delimiter"));
                    }
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(data: Vec<u8>, size: usize) -> ByteStream {
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    async fn collect(mut s: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn round_trip_in_any_chunking() {
        // Bytes that look like a delimiter's start must survive.
        let media: Vec<u8> = (0..50_000u32)
            .flat_map(|i| {
                if i % 997 == 0 {
                    b"\r\n--xy".to_vec()
                } else {
                    vec![i as u8]
                }
            })
            .collect();
        let boundary = new_boundary();
        let (prefix, suffix) = frame(&boundary, "image/png", "inline; filename=\"a.png\"");
        let mut body = prefix.to_vec();
        body.extend_from_slice(&media);
        body.extend_from_slice(&suffix);
        for size in [1, 7, 100, 4096, 1 << 20] {
            let mut r = MultipartReader::new(chunked(body.clone(), size), &boundary);
            let (meta, headers) = r.read_head().await.unwrap();
            assert_eq!(meta, serde_json::json!({}));
            assert_eq!(headers.get("Content-Type"), Some("image/png"));
            assert_eq!(
                headers.get("content-disposition"),
                Some("inline; filename=\"a.png\"")
            );
            assert_eq!(collect(r.into_body()).await.unwrap(), media, "chunk {size}");
        }
    }

    #[tokio::test]
    async fn truncated_and_malformed_bodies_fail() {
        let (prefix, _) = frame("b0undary", "text/plain", "inline");
        let mut body = prefix.to_vec();
        body.extend_from_slice(b"half of it");
        let mut r = MultipartReader::new(chunked(body, 5), "b0undary");
        r.read_head().await.unwrap();
        assert!(collect(r.into_body()).await.is_err());

        let only_json = b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n".to_vec();
        let mut r = MultipartReader::new(chunked(only_json, 3), "b");
        assert!(r.read_head().await.is_err());

        let not_json = b"--b\r\n\r\nnope\r\n--b\r\n\r\nx\r\n--b--".to_vec();
        let mut r = MultipartReader::new(chunked(not_json, 3), "b");
        assert!(r.read_head().await.is_err());
    }

    #[test]
    fn boundaries_are_read_from_the_content_type() {
        assert_eq!(
            boundary_of("multipart/mixed; boundary=\"abc\"").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary_of("Multipart/Mixed;charset=x; boundary=q1").as_deref(),
            Some("q1")
        );
        assert_eq!(boundary_of("multipart/form-data; boundary=x"), None);
        assert_eq!(boundary_of("multipart/mixed"), None);
    }
}
