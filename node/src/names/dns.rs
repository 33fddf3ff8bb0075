//! The agent's DNS server for `*.weft`: `reviews.weft` and `v2.reviews.weft` answer the
//! service's (or version's) virtual IP; a `.weft` name nobody runs answers NXDOMAIN; every
//! other zone is REFUSED (nothing is forwarded, so the agent can never be an open
//! resolver or answer for names it does not own). Bytes are parsed and written by
//! hickory-proto; this file decides the answer and bounds the transports: UDP answers
//! fit 512 bytes or the client's EDNS size, TCP takes at most `MAX_TCP_CONNECTIONS`
//! connections, `MAX_TCP_QUERIES` queries each, one message at a time within
//! `TCP_IDLE`. The UDP loop keeps no queue: a query is answered before the next is read.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Time to live of an answer, seconds (addresses are stable; services come and go).
pub const TTL: u32 = 5;
/// Largest UDP answer to a query without EDNS.
pub const UDP_PLAIN: usize = 512;
/// Largest UDP answer whatever the client offers (no fragmentation).
pub const UDP_MAX: usize = 1232;
/// Largest message read over TCP.
pub const TCP_MAX_MESSAGE: usize = 4096;
/// TCP connections served at once.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// Queries answered on one TCP connection.
pub const MAX_TCP_QUERIES: usize = 100;
/// How long a TCP connection may wait between queries.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket could not be bound.
    #[error("cannot listen for DNS on {addr} ({proto}): {source}; set `dns` (--dns) to a free address, or \"off\"")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// "udp" or "tcp".
        proto: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// Looks up a name under `.weft` (without the suffix, lower case): its address, if the
/// name is known.
pub trait Lookup: Send + Sync + 'static {
    /// `reviews` or `v2.reviews` → its address.
    fn lookup(&self, name: &str) -> Option<Ipv4Addr>;
}

impl<F: Fn(&str) -> Option<Ipv4Addr> + Send + Sync + 'static> Lookup for F {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        self(name)
    }
}

/// The answer to `request`, at most `max` bytes (None: drop it — not a DNS message).
pub fn answer(request: &[u8], zone: &dyn Lookup, udp: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(request).ok()?;
    if req.metadata.message_type != MessageType::Query {
        return None; // never answer an answer
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = false;
    let max = match (&req.edns, udp) {
        (_, false) => usize::from(u16::MAX),
        (Some(e), true) => usize::from(e.max_payload()).clamp(UDP_PLAIN, UDP_MAX),
        (None, true) => UDP_PLAIN,
    };
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(UDP_MAX as u16);
        resp.set_edns(e);
    }
    let code = if req.metadata.op_code != OpCode::Query {
        ResponseCode::NotImp
    } else if req.queries.len() != 1 {
        ResponseCode::FormErr
    } else {
        let q = &req.queries[0];
        resp.add_query(q.clone());
        let name = q.name().to_lowercase().to_ascii();
        let name = name.trim_end_matches('.');
        match name.strip_suffix(".weft") {
            None if name == "weft" => {
                resp.metadata.authoritative = true;
                ResponseCode::NoError
            }
            None => ResponseCode::Refused,
            Some(local) => {
                resp.metadata.authoritative = true;
                match zone.lookup(local) {
                    None => ResponseCode::NXDomain,
                    Some(ip) => {
                        if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
                            resp.add_answer(Record::from_rdata(
                                q.name().clone(),
                                TTL,
                                RData::A(A(ip)),
                            ));
                        }
                        // AAAA and the rest: the name exists, with no such data.
                        ResponseCode::NoError
                    }
                }
            }
        }
    };
    resp.metadata.response_code = code;
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= max {
        return Some(bytes);
    }
    let mut cut = resp.truncate();
    cut.metadata.response_code = code;
    cut.to_vec().ok()
}

/// The DNS server's sockets, bound (so a taken port is an error at start, not a log
/// line later).
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<Self, DnsError> {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr,
                proto: "udp",
                source,
            })?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr,
                proto: "tcp",
                source,
            })?;
        Ok(Self { udp, tcp })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Answers from `zone` until `stop`.
    pub async fn run(self, zone: Arc<dyn Lookup>, stop: CancellationToken) {
        tokio::join!(
            serve_udp(self.udp, zone.clone(), stop.clone()),
            serve_tcp(self.tcp, zone, stop)
        );
    }
}

async fn serve_udp(sock: UdpSocket, zone: Arc<dyn Lookup>, stop: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "DNS receive failed");
                    continue;
                }
            },
        };
        if let Some(out) = answer(&buf[..n], zone.as_ref(), true) {
            let _ = sock.send_to(&out, from).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<dyn Lookup>, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (mut sock, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "DNS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // over the cap: closed at once
        };
        let zone = zone.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            for _ in 0..MAX_TCP_QUERIES {
                let read = async {
                    let len = usize::from(sock.read_u16().await?);
                    if len == 0 || len > TCP_MAX_MESSAGE {
                        return Err(std::io::ErrorKind::InvalidData.into());
                    }
                    let mut msg = vec![0u8; len];
                    sock.read_exact(&mut msg).await?;
                    Ok::<_, std::io::Error>(msg)
                };
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = tokio::time::timeout(TCP_IDLE, read) => match r {
                        Ok(Ok(m)) => m,
                        _ => return,
                    },
                };
                let Some(out) = answer(&msg, zone.as_ref(), false) else {
                    return;
                };
                let Ok(len) = u16::try_from(out.len()) else {
                    return;
                };
                if sock.write_u16(len).await.is_err() || sock.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    fn zone(name: &str) -> Option<Ipv4Addr> {
        match name {
            "reviews" => Some(Ipv4Addr::new(127, 240, 1, 2)),
            "v2.reviews" => Some(Ipv4Addr::new(127, 240, 3, 4)),
            _ => None,
        }
    }

    fn ask(name: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("a name"), t));
        let out = answer(&m.to_vec().expect("bytes"), &zone, true).expect("an answer");
        Message::from_vec(&out).expect("a message")
    }

    fn a(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(A(ip)) => Some(ip),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn services_and_versions_resolve_unknown_names_do_not_and_other_zones_are_refused() {
        let m = ask("reviews.weft.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(a(&m), [Ipv4Addr::new(127, 240, 1, 2)]);
        assert_eq!(
            a(&ask("V2.Reviews.WEFT", RecordType::A)),
            [Ipv4Addr::new(127, 240, 3, 4)]
        );
        let six = ask("reviews.weft.", RecordType::AAAA);
        assert_eq!(
            (six.metadata.response_code, six.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert_eq!(
            ask("nope.weft.", RecordType::A).metadata.response_code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask("example.com.", RecordType::A).metadata.response_code,
            ResponseCode::Refused
        );
        assert_eq!(
            ask("reviews.weft.evil.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::Refused
        );
    }

    #[test]
    fn garbage_and_answers_are_dropped() {
        assert!(answer(b"\x00\x01garbage", &zone, true).is_none());
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("reviews.weft.").expect("name"),
            RecordType::A,
        ));
        assert!(
            answer(&m.to_vec().expect("bytes"), &zone, true).is_none(),
            "never answer an answer"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_answered_or_dropped_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Some(out) = answer(&bytes, &zone, true) {
                proptest::prop_assert!(out.len() <= UDP_MAX);
            }
        }
    }
}
