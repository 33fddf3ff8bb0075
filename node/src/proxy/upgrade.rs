//! `Upgrade` (WebSocket) through the mesh on `http` services: the upgrade request goes
//! to the instance like any request (routing, policy, retries until an answer); when the
//! instance answers 101, each hop hands its connection over and the two sides are spliced
//! as raw bytes until either closes. Three hops take part: the app's connection
//! (outbound), the QUIC stream (both ends), and the pooled connection to the instance
//! (inbound).

use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::Version;
use hyper_util::rt::TokioIo;
use tracing::debug;

/// Whether a request asks to switch protocols (HTTP/1.1 `Connection: upgrade` with an
/// `Upgrade` header; HTTP/2 has no such mechanism here).
pub fn requested(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The `Upgrade` value of a request that asks for one, to put back after the hop-by-hop
/// headers were stripped.
pub fn token(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    requested(version, headers)
        .then(|| headers.get(UPGRADE).cloned())
        .flatten()
}

/// Puts `Connection: upgrade` and `Upgrade: <token>` on the next hop's request.
pub fn restore(headers: &mut HeaderMap, token: &HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, token.clone());
}

/// Splices two upgraded connections once both are handed over; `what` names the hop in
/// the log. The task ends when either side closes.
pub fn splice(a: OnUpgrade, b: OnUpgrade, what: &'static str) {
    tokio::spawn(async move {
        let (a, b) = match tokio::try_join!(a, b) {
            Ok(both) => both,
            Err(e) => {
                debug!(hop = what, error = %e, "upgrade not completed");
                return;
            }
        };
        let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
        match tokio::io::copy_bidirectional(&mut a, &mut b).await {
            Ok((up, down)) => debug!(hop = what, up, down, "upgraded connection closed"),
            Err(e) => debug!(hop = what, error = %e, "upgraded connection ended"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http1_requests_naming_upgrade_in_connection_ask_for_one() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!requested(Version::HTTP_11, &h), "no Connection: upgrade");
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(requested(Version::HTTP_11, &h));
        assert!(!requested(Version::HTTP_2, &h));
        assert_eq!(
            token(Version::HTTP_11, &h),
            Some(HeaderValue::from_static("websocket"))
        );
        let mut next = HeaderMap::new();
        restore(&mut next, &HeaderValue::from_static("websocket"));
        assert!(requested(Version::HTTP_11, &next));
    }
}
