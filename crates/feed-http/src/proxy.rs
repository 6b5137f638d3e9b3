//! The PROXY protocol on the public listener (`limits.proxy_protocol`): a
//! balancer in TCP mode (HAProxy's `send-proxy` or `send-proxy-v2`) opens
//! each connection with a header naming the client it accepted the
//! connection from. That client becomes the connection's peer address, so
//! the rate limit and the access log see it exactly as they see a direct
//! client, and no HTTP header is parsed or rewritten on the way.
//!
//! The rules, for every connection on a listener that accepts the header:
//! - only a peer in `limits.trusted_proxies` may send one: anyone else
//!   could name any client, so their connections are plain HTTP, read as
//!   they come (a header from them is not HTTP, and is answered 400);
//! - a trusted peer's connection that opens with a header (v1 text or v2
//!   binary, parsed by `ppp`) is served as the client it names; the header
//!   must be whole within `limits.client_request_timeout_ms` and at most
//!   [`MAX_HEADER`] bytes, and a malformed one closes the connection;
//! - a header that names no client (v1 `UNKNOWN`, v2 `LOCAL`, as a
//!   balancer's health check sends, or a Unix socket) leaves the peer as
//!   the proxy itself;
//! - a trusted peer's connection that opens with anything else is plain
//!   HTTP from that peer, as without the setting (an orchestrator's
//!   readiness probe, a test client): a request line never starts like a
//!   header (`PROXY ` or the v2 signature, which starts with CR LF);
//! - bytes read after the header, or the first bytes of a plain
//!   connection, are the start of the HTTP stream and are handed to it
//!   first ([`Proxied`]);
//! - `X-Forwarded-For` is not read on such a listener (the request gate is
//!   built without proxies: `LimitSettings::forwarded_for`), since a TCP
//!   balancer passes on whatever the client wrote.
//!
//! A refused connection is logged by the request gate, within its error
//! lines' budget.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ppp::PartialResult;
use ppp::v2::Command;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::client::TrustedProxies;

/// The longest header read: a v1 header is at most 107 bytes, a v2 header
/// 16 bytes plus its addresses and whatever TLVs the balancer adds.
pub const MAX_HEADER: usize = 4096;

/// A header, read from the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// Not a PROXY protocol header: plain HTTP, or (when
    /// [`looks_like_header`]) a malformed header.
    Bad,
    /// A header of `len` bytes naming `source` (`None` when it names no
    /// client).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// The longest v1 header, its CR LF included.
const V1_MAX: usize = 107;

/// Reads a header (either version) from the start of `bytes`.
///
/// When a header is whole is decided here, not by `ppp`'s partial
/// results: a v1 header is whole at its first CR LF (within [`V1_MAX`]
/// bytes), and `ppp` calls some complete but malformed v1 headers
/// incomplete (a missing field), which would wait for bytes that never
/// come. A v2 header's length is in its first 16 bytes, and `ppp` reads it
/// exactly.
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    const V1: &[u8] = b"PROXY";
    if bytes.starts_with(V1) || V1.starts_with(bytes) {
        let Some(end) = bytes.windows(2).position(|pair| pair == b"\r\n") else {
            return if bytes.len() < V1_MAX {
                Parsed::Incomplete
            } else {
                Parsed::Bad
            };
        };
        let Ok(header) = ppp::v1::Header::try_from(&bytes[..end + 2]) else {
            return Parsed::Bad;
        };
        let source = match header.addresses {
            ppp::v1::Addresses::Unknown => None,
            ppp::v1::Addresses::Tcp4(ip) => {
                Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
            }
            ppp::v1::Addresses::Tcp6(ip) => {
                Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
            }
        };
        return Parsed::Header {
            len: end + 2,
            source,
        };
    }
    let header = ppp::v2::Header::try_from(bytes);
    if header.is_incomplete() {
        return Parsed::Incomplete;
    }
    let Ok(header) = header else {
        return Parsed::Bad;
    };
    let source = match (header.command, header.addresses) {
        (Command::Proxy, ppp::v2::Addresses::IPv4(ip)) => {
            Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        (Command::Proxy, ppp::v2::Addresses::IPv6(ip)) => {
            Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        _ => None,
    };
    Parsed::Header {
        len: header.len(),
        source,
    }
}

/// Whether `bytes` start as a PROXY header does (`PROXY ` or the v2
/// signature, as far as they go): a [`Parsed::Bad`] that does is a
/// malformed header, not HTTP.
fn looks_like_header(bytes: &[u8]) -> bool {
    const V1: &[u8] = b"PROXY ";
    const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    [V1, V2].iter().any(|sign| {
        let n = sign.len().min(bytes.len());
        n > 0 && bytes[..n] == sign[..n]
    })
}

/// Why a connection was refused.
fn refused(kind: io::ErrorKind, why: String) -> io::Error {
    io::Error::new(kind, why)
}

/// Takes the PROXY header, if any, off a fresh connection (see the
/// module's rules): the stream to serve (with the bytes read past the
/// header first) and the client's address (the peer's own without a
/// header, from an untrusted peer, or when the header names none).
/// `Ok(None)` when the connection is to be closed quietly, as the plain
/// listener would: it is gone already, or a trusted peer sent nothing at
/// all before it closed or the time limit passed (a TCP health check).
///
/// # Errors
/// The connection must be closed, and the reason is worth a log line: its
/// header is malformed, longer than [`MAX_HEADER`] or not whole within
/// `limit`, or the peer closed in the middle of it, or reading failed.
pub(crate) async fn accept(
    mut io: TcpStream,
    trusted: &TrustedProxies,
    limit: Duration,
) -> io::Result<Option<(Proxied, SocketAddr)>> {
    let Ok(peer) = io.peer_addr() else {
        return Ok(None);
    };
    if !trusted.trusts(peer.ip().to_canonical()) {
        return Ok(Some((Proxied::plain(Vec::new(), io), peer)));
    }
    let mut buf = Vec::with_capacity(512);
    let read = async {
        loop {
            if buf.len() >= MAX_HEADER {
                return Err(refused(
                    io::ErrorKind::InvalidData,
                    format!("no PROXY header within {MAX_HEADER} bytes from {peer}"),
                ));
            }
            if buf.len() == buf.capacity() {
                buf.reserve(buf.len());
            }
            let mut window = (&mut io).take((MAX_HEADER - buf.len()) as u64);
            if window.read_buf(&mut buf).await? == 0 {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Err(refused(
                    io::ErrorKind::UnexpectedEof,
                    format!("{peer} closed before its PROXY header ended"),
                ));
            }
            match parse(&buf) {
                Parsed::Incomplete => {}
                Parsed::Bad if looks_like_header(&buf) => {
                    return Err(refused(
                        io::ErrorKind::InvalidData,
                        format!("{peer} sent a malformed PROXY header"),
                    ));
                }
                Parsed::Bad => return Ok(Some((0, peer))),
                Parsed::Header { len, source } => return Ok(Some((len, source.unwrap_or(peer)))),
            }
        }
    };
    let read = tokio::time::timeout(limit, read).await;
    let (len, client) = match read {
        Ok(read) => match read? {
            Some(header) => header,
            None => return Ok(None),
        },
        Err(_) if buf.is_empty() => return Ok(None),
        Err(_) => {
            return Err(refused(
                io::ErrorKind::TimedOut,
                format!("{peer} sent no whole PROXY header in {limit:?}"),
            ));
        }
    };
    buf.drain(..len);
    Ok(Some((Proxied::plain(buf, io), client)))
}

/// A connection whose PROXY header has been read: the bytes read past the
/// header come first, then the socket's.
#[derive(Debug)]
pub struct Proxied {
    early: Vec<u8>,
    at: usize,
    io: TcpStream,
}

impl Proxied {
    /// `io`, with `early` (already read from it) to be read first. The
    /// buffer is let go as soon as it is empty, so a connection holds none
    /// for its life.
    fn plain(early: Vec<u8>, io: TcpStream) -> Self {
        let early = if early.is_empty() { Vec::new() } else { early };
        Self { early, at: 0, io }
    }
}

impl AsyncRead for Proxied {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(early) = this.early.get(this.at..).filter(|rest| !rest.is_empty()) {
            let n = early.len().min(buf.remaining());
            buf.put_slice(&early[..n]);
            this.at += n;
            if this.at == this.early.len() {
                this.early = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Proxied {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use ppp::v2::{Builder, Protocol, Version};
    use proptest::prelude::*;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_v1_header_names_the_client_and_its_length() {
        let head = b"PROXY TCP4 198.51.100.7 10.0.0.1 50123 8080\r\n";
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"GET /feed/1 HTTP/1.1\r\n\r\n");
        assert_eq!(
            parse(&bytes),
            Parsed::Header {
                len: head.len(),
                source: Some(addr("198.51.100.7:50123"))
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 443 8080\r\n";
        assert_eq!(
            parse(v6),
            Parsed::Header {
                len: v6.len(),
                source: Some(addr("[2001:db8::7]:443"))
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
    }

    fn v2(command: Command, addresses: impl Into<ppp::v2::Addresses>) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    #[test]
    fn a_v2_header_names_the_client_unless_it_is_local() {
        let proxy = v2(
            Command::Proxy,
            (
                SocketAddr::new(Ipv4Addr::new(203, 0, 113, 9).into(), 4000),
                addr("10.0.0.1:8080"),
            ),
        );
        assert_eq!(
            parse(&proxy),
            Parsed::Header {
                len: proxy.len(),
                source: Some(addr("203.0.113.9:4000"))
            }
        );
        let six = v2(
            Command::Proxy,
            (
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 1),
                addr("[::1]:8080"),
            ),
        );
        assert_eq!(
            parse(&six),
            Parsed::Header {
                len: six.len(),
                source: Some(addr("[::1]:1"))
            }
        );
        let local = v2(Command::Local, ppp::v2::Addresses::Unspecified);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: local.len(),
                source: None
            }
        );
    }

    #[test]
    fn a_cut_header_asks_for_more_and_http_is_not_a_header() {
        let head = b"PROXY TCP4 198.51.100.7 10.0.0.1 50123 8080\r\n";
        for cut in 1..head.len() {
            assert_eq!(parse(&head[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        let proxy = v2(
            Command::Proxy,
            (addr("203.0.113.9:4000"), addr("10.0.0.1:8080")),
        );
        for cut in 1..proxy.len() {
            assert_eq!(parse(&proxy[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        for http in [&b"GET /feed/1 HTTP/1.1\r\n\r\n"[..], b"G", b"\r\nGET"] {
            assert_eq!(parse(http), Parsed::Bad, "{http:?}");
            assert!(!looks_like_header(http), "{http:?}");
        }
        let malformed = b"PROXY TCP4 not-an-address\r\n";
        assert_eq!(parse(malformed), Parsed::Bad);
        assert!(looks_like_header(malformed));
    }

    /// A connected pair over loopback: the accepted side and the client.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    /// What [`accept`] makes of a connection that sent `sent` and closed,
    /// with `trusted` proxies: the client, and every byte left to serve.
    async fn accepted(sent: &[u8], trusted: &str) -> (SocketAddr, Vec<u8>) {
        use tokio::io::AsyncWriteExt;
        let (server, mut client) = pair().await;
        client.write_all(sent).await.unwrap();
        client.shutdown().await.unwrap();
        let trusted: TrustedProxies = trusted.parse().unwrap();
        let (mut io, source) = accept(server, &trusted, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        (source, rest)
    }

    #[tokio::test]
    async fn the_bytes_after_the_header_are_read_first() {
        let header = b"PROXY TCP4 198.51.100.7 10.0.0.1 50123 8080\r\n";
        let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let (source, rest) = accepted(&[&header[..], request].concat(), "127.0.0.1").await;
        assert_eq!(source, addr("198.51.100.7:50123"));
        assert_eq!(rest, request);
    }

    #[tokio::test]
    async fn without_a_header_or_trust_the_connection_is_plain_http() {
        let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let header = b"PROXY TCP4 198.51.100.7 10.0.0.1 50123 8080\r\n";
        let (source, rest) = accepted(header, "10.0.0.0/8").await;
        assert_eq!(source.ip(), loopback);
        assert_eq!(rest, header, "an untrusted peer's header is not taken off");

        let request = b"GET / HTTP/1.1\r\n\r\n";
        let (source, rest) = accepted(request, "127.0.0.1").await;
        assert_eq!(source.ip(), loopback);
        assert_eq!(rest, request);
    }

    #[tokio::test]
    async fn a_malformed_or_slow_header_is_refused() {
        use tokio::io::AsyncWriteExt;
        let trusted: TrustedProxies = "127.0.0.1".parse().unwrap();
        let (server, mut client) = pair().await;
        client.write_all(b"PROXY TCP4 nowhere\r\n").await.unwrap();
        let refused = accept(server, &trusted, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);

        // Headers longer than allowed: a v1 line without its end, and a v2
        // header announcing 65,535 bytes (the peer sends them all).
        let mut endless_v1 = b"PROXY TCP4 ".to_vec();
        endless_v1.resize(2 * V1_MAX, b'1');
        let mut huge_v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
        huge_v2.resize(16 + 65_535, 0);
        for sent in [endless_v1, huge_v2] {
            let (server, mut client) = pair().await;
            let writer = tokio::spawn(async move {
                // The server stops reading at its limit: a write past what
                // the socket buffers takes may fail, which is the point.
                let _ = client.write_all(&sent).await;
                client
            });
            let refused = accept(server, &trusted, Duration::from_secs(30))
                .await
                .unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::InvalidData, "{refused}");
            drop(writer.await);
        }

        // Bytes that could start a header, then nothing: the time limit;
        // then the peer goes away in the middle of a header.
        let (server, mut client) = pair().await;
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        let refused = accept(server, &trusted, Duration::from_millis(1))
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::TimedOut);
        let (server, mut client) = pair().await;
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        client.shutdown().await.unwrap();
        let refused = accept(server, &trusted, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A trusted peer that sends nothing (a TCP health check that connects
    /// and closes, or one that waits) is closed quietly, as the plain
    /// listener closes it: nothing worth a log line.
    #[tokio::test]
    async fn a_silent_trusted_peer_is_closed_quietly() {
        use tokio::io::AsyncWriteExt;
        let trusted: TrustedProxies = "127.0.0.1".parse().unwrap();
        let (server, mut client) = pair().await;
        client.shutdown().await.unwrap();
        let closed = accept(server, &trusted, Duration::from_secs(30)).await;
        assert!(matches!(closed, Ok(None)), "{closed:?}");
        let (server, _client) = pair().await;
        let idle = accept(server, &trusted, Duration::from_millis(1)).await;
        assert!(matches!(idle, Ok(None)), "{idle:?}");
    }

    /// A header naming `source` (to `destination`): v1 text or v2 binary.
    fn header(v2_form: bool, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        if v2_form {
            return v2(Command::Proxy, (source, destination));
        }
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        format!(
            "PROXY {family} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        )
        .into_bytes()
    }

    fn socket_addr(v6: bool) -> impl Strategy<Value = SocketAddr> {
        (any::<u32>(), any::<u128>(), any::<u16>()).prop_map(move |(four, six, port)| {
            if v6 {
                SocketAddr::new(Ipv6Addr::from(six).into(), port)
            } else {
                SocketAddr::new(Ipv4Addr::from(four).into(), port)
            }
        })
    }

    proptest! {
        /// Whatever a peer sends, parsing ends in one of the three answers,
        /// and a header's length never runs past the bytes read.
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Parsed::Header { len, .. } = parse(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }

        /// Any header, of either version and family, followed by any
        /// bytes: its own length and client; cut anywhere short of its
        /// end: more bytes are asked for; with one byte changed: never a
        /// panic, and never a length past the bytes.
        #[test]
        fn headers_are_read_whole_or_waited_for(
            v2_form in any::<bool>(),
            (source, destination) in any::<bool>()
                .prop_flat_map(|v6| (socket_addr(v6), socket_addr(v6))),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<proptest::sample::Index>(),
            flip in any::<(proptest::sample::Index, u8)>(),
        ) {
            let head = header(v2_form, source, destination);
            let mut bytes = head.clone();
            bytes.extend_from_slice(&rest);
            prop_assert_eq!(
                parse(&bytes),
                Parsed::Header { len: head.len(), source: Some(source) }
            );
            let short = cut.index(head.len() - 1) + 1;
            prop_assert_eq!(parse(&head[..short]), Parsed::Incomplete);
            let mut changed = head;
            let at = flip.0.index(changed.len());
            changed[at] ^= flip.1 | 1;
            if let Parsed::Header { len, .. } = parse(&changed) {
                prop_assert!(len <= changed.len());
            }
        }
    }
}
