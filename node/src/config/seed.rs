//! Seed addresses given to `--join`: `HOST[:PORT]`, checked when the settings are
//! resolved and looked up (DNS allowed) when joining.

use std::net::SocketAddr;

use super::settings::DEFAULT_QUIC_PORT;

/// A seed that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// Empty, too long, a bad port or bad host characters.
    #[error("{seed:?}: {why}")]
    Syntax {
        /// The seed as given.
        seed: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The name did not resolve.
    #[error("cannot resolve {seed:?}: {why}")]
    Resolve {
        /// The seed as given.
        seed: String,
        /// The resolver's answer.
        why: String,
    },
}

fn syntax(seed: &str, why: &'static str) -> SeedError {
    SeedError::Syntax {
        seed: seed.to_owned(),
        why,
    }
}

/// Checks `HOST[:PORT]` syntax and returns host and port.
pub fn parse_seed(seed: &str) -> Result<(String, u16), SeedError> {
    if seed.is_empty() || seed.len() > 255 {
        return Err(syntax(seed, "empty or too long"));
    }
    if let Ok(addr) = seed.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = seed.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), DEFAULT_QUIC_PORT));
    }
    let (host, port) = match seed.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| syntax(seed, "bad port"))?),
        None => (seed, DEFAULT_QUIC_PORT),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(syntax(seed, "expected HOST[:PORT]"));
    }
    Ok((host.to_owned(), port))
}

/// Resolves a seed to socket addresses (DNS allowed).
pub async fn resolve_seed(seed: &str) -> Result<Vec<SocketAddr>, SeedError> {
    let (host, port) = parse_seed(seed)?;
    let addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| SeedError::Resolve {
            seed: seed.to_owned(),
            why: e.to_string(),
        })?;
    Ok(addrs.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        assert_eq!(parse_seed("10.0.0.1"), Ok(("10.0.0.1".into(), 7443)));
        assert_eq!(parse_seed("10.0.0.1:9"), Ok(("10.0.0.1".into(), 9)));
        assert_eq!(parse_seed("seed.local"), Ok(("seed.local".into(), 7443)));
        assert_eq!(parse_seed("[::1]:5"), Ok(("::1".into(), 5)));
        assert!(parse_seed("a:b:c").is_err());
        assert!(parse_seed("").is_err());
    }
}
