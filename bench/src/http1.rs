//! A blocking HTTP/1.1 client over one kept-alive TCP connection.
//!
//! Only what a registry probe and a load generator need: bodies by `content-length`, `chunked`,
//! or to the end of the connection; no TLS, no redirects, no proxies.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

/// One answer.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names and values as received.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// True when the server will close the connection after this answer.
    pub closes: bool,
}

impl Reply {
    /// The first value of the header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A connection to one `host:port`.
pub struct Connection {
    reader: BufReader<TcpStream>,
    authority: String,
}

impl Connection {
    /// Connects to `authority` (`host:port`), with `timeout` for connecting and for each read.
    pub fn connect(authority: &str, timeout: Duration) -> io::Result<Connection> {
        let address = authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            authority: authority.to_string(),
        })
    }

    /// Sends one request and reads its whole answer.
    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {}\r\n", self.authority);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let has_length = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
        if !body.is_empty() && !has_length || method == "POST" && body.is_empty() {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(body);
        self.reader.get_mut().write_all(&message)?;
        self.read_reply(method == "HEAD")
    }

    fn read_reply(&mut self, head_only: bool) -> io::Result<Reply> {
        let status_line = self.line()?;
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or_default().to_string();
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;

        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
            closes: false,
        };
        reply.closes = reply
            .header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
            || version == "HTTP/1.0";

        let bodiless = head_only || status == 204 || status == 304 || status < 200;
        if bodiless {
            return Ok(reply);
        }
        if let Some(length) = reply.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| invalid(format!("bad content-length {length:?}")))?;
            reply.body = vec![0; length];
            self.reader.read_exact(&mut reply.body)?;
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|value| value.eq_ignore_ascii_case("chunked"))
        {
            reply.body = self.chunked()?;
        } else {
            self.reader.read_to_end(&mut reply.body)?;
            reply.closes = true;
        }
        Ok(reply)
    }

    fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader.read_exact(&mut body[start..])?;
            self.line()?;
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the answer",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
