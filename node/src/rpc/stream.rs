//! One request and one response per bidirectional QUIC stream, each size- and
//! time-limited.

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use super::messages::{decode, encode, DecodeError};

/// How long one request/response exchange may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// An exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The stream failed.
    #[error("stream failed: {0}")]
    Stream(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The answer did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Sends `request` on a new stream of `conn` and reads one response of at most `limit`.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    conn: &quinn::Connection,
    request: &Req,
    limit: usize,
) -> Result<Resp, RpcError> {
    let exchange = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| RpcError::Stream(e.to_string()))?;
        send.write_all(&encode(request))
            .await
            .map_err(|e| RpcError::Stream(e.to_string()))?;
        send.finish().map_err(|e| RpcError::Stream(e.to_string()))?;
        let bytes = recv
            .read_to_end(limit)
            .await
            .map_err(|e| RpcError::Stream(e.to_string()))?;
        Ok(decode(&bytes, limit)?)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| RpcError::Timeout)?
}

/// Reads one request of at most `limit` bytes from an accepted stream.
pub async fn read_request(recv: &mut quinn::RecvStream, limit: usize) -> Result<Vec<u8>, RpcError> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, recv.read_to_end(limit))
        .await
        .map_err(|_| RpcError::Timeout)?
        .map_err(|e| RpcError::Stream(e.to_string()))
}

/// Writes the response and finishes the stream.
pub async fn respond<Resp: Serialize>(
    send: &mut quinn::SendStream,
    response: &Resp,
) -> Result<(), RpcError> {
    let write = async {
        send.write_all(&encode(response))
            .await
            .map_err(|e| RpcError::Stream(e.to_string()))?;
        send.finish().map_err(|e| RpcError::Stream(e.to_string()))?;
        // Wait until the peer has the data (or went away) before dropping the stream.
        let _ = send.stopped().await;
        Ok(())
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, write)
        .await
        .map_err(|_| RpcError::Timeout)?
}
